"""The API's routers: reads, actions, access."""
