"""The GXO expression language: AST, parser and function signatures."""
