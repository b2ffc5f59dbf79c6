"""The domain: job types, Azure clients and policies. Knows nothing of Azure Functions."""
