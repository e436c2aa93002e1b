from onnxformer.cli import main

raise SystemExit(main())
