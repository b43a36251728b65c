import sys

try:
    from compare.cli import main
except KeyboardInterrupt:  # Ctrl-C while starting up: one line, as anywhere else
    print("compare: interrupted", file=sys.stderr)
    raise SystemExit(130)

raise SystemExit(main())
