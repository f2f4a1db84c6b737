from raremine.cli import main

main()
