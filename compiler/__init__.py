"""GXO compiler: playbook loader, expression language, resolver, type checker and the gxoc CLI."""
