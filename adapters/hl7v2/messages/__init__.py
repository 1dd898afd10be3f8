"""One module per message structure: Message → transaction Bundle (pure), registered in the router."""
