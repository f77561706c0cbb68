"""What `library-gateway demo` runs beside the gateway: stand-in services, a mail catcher."""
