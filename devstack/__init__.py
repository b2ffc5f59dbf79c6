"""Local Azure for development and tests: emulators and (later) a local Functions host. Never deployed."""
