"""Emulators for Azure OpenAI (data plane), ARM, Key Vault and managed identity, in one aiohttp process."""
