"""GXO runtime: plan loader, kernel and the gxo CLI.  Never imports the compiler's dependencies."""
