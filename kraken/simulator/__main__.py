from kraken.simulator.cli import main

raise SystemExit(main())
