"""Package data: the Lark grammar of the expression language."""
