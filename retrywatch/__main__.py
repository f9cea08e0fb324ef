from retrywatch.cli import main

main()
