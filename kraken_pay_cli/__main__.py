from kraken_pay_cli import main

main()
