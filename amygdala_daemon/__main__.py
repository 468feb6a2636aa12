from amygdala_daemon.cli import main

raise SystemExit(main())
