"""Package data: JSON Schemas for playbooks and plans."""
