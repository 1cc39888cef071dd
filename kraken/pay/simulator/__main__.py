from kraken.pay.simulator.cli import main

raise SystemExit(main())
