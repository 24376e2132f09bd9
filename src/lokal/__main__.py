from lokal.cli.main import main

main()
