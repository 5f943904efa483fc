"""The gateway: named typed actors (`@remote(typed=True)`) called from any language over HTTP/JSON
and gRPC, with an OpenAPI document made from their type hints (`actorhub serve-gateway`)."""
