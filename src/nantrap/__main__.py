from nantrap.cli import main

raise SystemExit(main())
