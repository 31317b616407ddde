from vidiff.cli import main

raise SystemExit(main())
