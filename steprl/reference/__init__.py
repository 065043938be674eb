"""Reference pages generated from the code, so they cannot go stale: every config key from the typed config
dataclasses (`config_page`), every CLI command from the argparse parsers (`cli_page`). `python -m steprl.reference`
rewrites docs/reference/; a test fails when the checked-in pages differ from what the code generates."""
