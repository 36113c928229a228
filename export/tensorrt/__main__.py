"""``python -m aeserve.export.tensorrt BUNDLE PLAN_DIR ...``: record plans ``trtexec`` built."""

from aeserve.export.tensorrt.record import main

raise SystemExit(main())
