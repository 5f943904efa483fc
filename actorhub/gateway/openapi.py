"""The gateway's OpenAPI 3.1 document, made from the typed interfaces of the named actors it sees.

One POST operation per exposed method of each named typed actor, at its concrete path. The
request body's `args` lists the positional parameters in order (JSON Schema `prefixItems`),
`kwargs` the ones that can be named; each parameter's and the result's schema is pydantic's
(`TypeAdapter.json_schema`), with the models they use under `components/schemas`. The document
is made per request: it follows the actors as they come and go.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import pydantic
import pydantic_core
from pydantic.json_schema import JsonSchemaMode

from actorhub.gateway.interface import ExposedMethod, positional_parameters
from actorhub.wire.records import ActorInfo

log = logging.getLogger(__name__)

_REF_TEMPLATE = "#/components/schemas/{model}"
_ERROR_REF = {"$ref": "#/components/schemas/GatewayError"}
_GATEWAY_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "object", "required": ["type", "message"], "properties": {
        "type": {"type": "string"}, "message": {"type": "string"}}}},
    "required": ["error"],
}
_ERROR_RESPONSES = {
    "400": "The arguments do not fit the method's type hints, or the body is not {args, kwargs}",
    "401": "No cluster token, or another cluster's (Authorization: Bearer <token>)",
    "404": "No live actor by that name in the namespace, or it exposes no such method",
    "500": "The method raised; error.type is its exception's class name",
    "503": "The actor cannot be reached now (restarting, its node lost); a retry may succeed",
}


def document(actors: Sequence[tuple[ActorInfo, dict[str, ExposedMethod]]], version: str) -> dict[str, Any]:
    schemas = _Schemas()
    for _, methods in actors:
        for method in methods.values():
            for param in method.parameters:
                schemas.add(param.adapter, "validation")
            schemas.add(method.returns, "serialization")
    schemas.generate()
    paths: dict[str, Any] = {"/v1/namespaces/{namespace}/actors": _listing_operation()}
    for info, methods in actors:
        for name, method in sorted(methods.items()):
            path = f"/v1/namespaces/{quote(info.namespace, safe='')}/actors/{quote(info.name, safe='')}/{name}"
            paths[path] = {"post": _operation(info, method, schemas)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "actorhub gateway", "version": version,
                 "description": "Calls to the named typed actors (@remote(typed=True)) of an actorhub cluster."},
        "paths": paths,
        "components": {
            "schemas": {"GatewayError": _GATEWAY_ERROR, **schemas.definitions},
            "securitySchemes": {"clusterToken": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"clusterToken": []}],
    }


class _Schemas:
    """pydantic's JSON schemas of every parameter and result, made in one go so that the models
    they share are defined once, under components/schemas, and referenced (two models of one
    name get distinct names)."""

    def __init__(self) -> None:
        self._inputs: dict[tuple[int, JsonSchemaMode], pydantic.TypeAdapter[Any]] = {}
        self._made: dict[tuple[int, JsonSchemaMode], dict[str, Any]] = {}
        self.definitions: dict[str, Any] = {}

    def add(self, adapter: pydantic.TypeAdapter[Any] | None, mode: JsonSchemaMode) -> None:
        if adapter is not None:
            self._inputs[(id(adapter), mode)] = adapter

    def generate(self) -> None:
        inputs = [(key[0], key[1], adapter) for key, adapter in self._inputs.items()]
        try:
            made, definitions = pydantic.TypeAdapter.json_schemas(inputs, ref_template=_REF_TEMPLATE)
        except pydantic.PydanticUserError as e:  # e.g. a type with no JSON schema (arbitrary_types_allowed)
            log.info("schemas made one by one: %s", e)
            made, definitions = self._one_by_one(inputs), {}
        self._made = made
        self.definitions.update(definitions.get("$defs", {}))

    def _one_by_one(self, inputs: list[Any]) -> dict[tuple[int, JsonSchemaMode], dict[str, Any]]:
        made = {}
        for key, mode, adapter in inputs:
            try:
                schema = adapter.json_schema(ref_template=_REF_TEMPLATE, mode=mode)
            except pydantic.PydanticUserError:
                continue  # described as any value
            self.definitions.update(schema.pop("$defs", {}))
            made[(key, mode)] = schema
        return made

    def of(self, adapter: pydantic.TypeAdapter[Any] | None, mode: JsonSchemaMode) -> dict[str, Any]:
        """The schema of a parameter's or result's type; {} (any JSON value) for no hint, or a
        type with no JSON schema."""
        if adapter is None:
            return {}
        return self._made.get((id(adapter), mode), {})


def _operation(info: ActorInfo, method: ExposedMethod, schemas: _Schemas) -> dict[str, Any]:
    positional = positional_parameters(method)
    named = [p for p in method.parameters
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    var_args = next((p for p in method.parameters if p.kind == inspect.Parameter.VAR_POSITIONAL), None)
    var_kwargs = next((p for p in method.parameters if p.kind == inspect.Parameter.VAR_KEYWORD), None)
    args: dict[str, Any] = {"type": "array", "prefixItems": [schemas.of(p.adapter, "validation")
                                                            for p in positional]}
    if var_args is None:
        args["maxItems"] = len(positional)
    else:
        args["items"] = schemas.of(var_args.adapter, "validation")
    kwargs: dict[str, Any] = {"type": "object",
                              "properties": {p.name: _with_default(schemas.of(p.adapter, "validation"), p.default)
                                             for p in named}}
    required = [p.name for p in named if p.required and p.kind == inspect.Parameter.KEYWORD_ONLY]
    if required:
        kwargs["required"] = required
    kwargs["additionalProperties"] = schemas.of(var_kwargs.adapter, "validation") if var_kwargs else False
    responses: dict[str, Any] = {"200": {"description": "The method's result", "content": {"application/json": {
        "schema": {"type": "object", "required": ["result"],
                   "properties": {"result": schemas.of(method.returns, "serialization")}}}}}}
    for status, text in _ERROR_RESPONSES.items():
        responses[status] = {"description": text, "content": {"application/json": {"schema": _ERROR_REF}}}
    return {
        "operationId": _operation_id(info.namespace, info.name, method.name.rpartition(".")[2]),
        "summary": f"{method.name} of the actor {info.name!r}",
        "tags": [f"{info.namespace}/{info.name}"],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"args": args, "kwargs": kwargs}}}}},
        "responses": responses,
    }


def _listing_operation() -> dict[str, Any]:
    method = {"type": "object", "properties": {"name": {"type": "string"}, "path": {"type": "string"}}}
    actor = {"type": "object", "properties": {"name": {"type": "string"}, "class_name": {"type": "string"},
                                              "state": {"type": "string"},
                                              "methods": {"type": "array", "items": method}}}
    return {"get": {
        "operationId": "listActors",
        "summary": "The named typed actors of a namespace and their exposed methods",
        "parameters": [{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "The actors", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"namespace": {"type": "string"},
                                                 "actors": {"type": "array", "items": actor}}}}}},
            "401": {"description": _ERROR_RESPONSES["401"],
                    "content": {"application/json": {"schema": _ERROR_REF}}},
        },
    }}


def _with_default(schema: dict[str, Any], default: Any) -> dict[str, Any]:
    if default is inspect.Parameter.empty:
        return schema
    try:
        return {**schema, "default": pydantic_core.to_jsonable_python(default)}
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError):
        return schema  # a default with no JSON form: not shown


def _operation_id(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9]+", "_", part) for part in parts)
