"""A mypy plugin that types actor handles: `plugins = actorhub.mypy_plugin` in mypy's config.

Without it, `Counter.remote()` on a class decorated with `@remote` is an error to mypy (a class
decorator cannot change what mypy thinks the class is) and `handle.incr` is untyped. With it:
- a class decorated with `actorhub.remote` (bare or with options) gets `remote(...)`, returning
  `ActorHandle[Counter]`, and `options(...)`, returning `ActorClass[Counter]`;
- `handle.incr` of an `ActorHandle[Counter]` is a `TypedActorMethod` with `incr`'s parameters
  (less `self`) whose `remote(...)` returns `ObjectRef[int]` for `def incr(...) -> int` (the
  awaited value for an `async def`), so a wrong argument or a wrong use of the result is a type
  error where the call is written.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.checker import TypeChecker
from mypy.nodes import ARG_STAR, ARG_STAR2, Argument, Decorator, FuncDef, MemberExpr, TypeInfo, Var
from mypy.plugin import AttributeContext, ClassDefContext, Plugin
from mypy.plugins.common import add_method_to_class
from mypy.types import AnyType, CallableType, Instance, Parameters, Type, TypeOfAny, get_proper_type

_HANDLE = "actorhub.api.actor_handle.ActorHandle"
_CLASS = "actorhub.api.actor_class.ActorClass"
_METHOD = "actorhub.api.actor_handle.TypedActorMethod"
_DECORATOR = "actorhub.api.remote.remote"


class ActorhubPlugin(Plugin):
    def get_class_decorator_hook(self, fullname: str) -> Callable[[ClassDefContext], None] | None:
        return _add_remote if fullname == _DECORATOR else None

    def get_attribute_hook(self, fullname: str) -> Callable[[AttributeContext], Type] | None:
        return _method_of_handle if fullname.startswith(_HANDLE + ".") else None


def _add_remote(ctx: ClassDefContext) -> None:
    """`remote(*args, **kwargs) -> ActorHandle[Cls]` and `options(**options) -> ActorClass[Cls]`."""
    handle = ctx.api.lookup_fully_qualified_or_none(_HANDLE)
    actor_class = ctx.api.lookup_fully_qualified_or_none(_CLASS)
    if handle is None or actor_class is None or not isinstance(handle.node, TypeInfo) \
            or not isinstance(actor_class.node, TypeInfo):
        if not ctx.api.final_iteration:
            ctx.api.defer()
        return
    info = ctx.cls.info
    this = Instance(info, [AnyType(TypeOfAny.special_form)] * len(info.defn.type_vars))
    anything = AnyType(TypeOfAny.explicit)
    star = [Argument(Var("args", anything), anything, None, ARG_STAR),
            Argument(Var("kwargs", anything), anything, None, ARG_STAR2)]
    add_method_to_class(ctx.api, ctx.cls, "remote", star, Instance(handle.node, [this]), is_classmethod=True)
    add_method_to_class(ctx.api, ctx.cls, "options", star[1:], Instance(actor_class.node, [this]),
                        is_classmethod=True)


def _method_of_handle(ctx: AttributeContext) -> Type:
    handle = get_proper_type(ctx.type)
    if not isinstance(handle, Instance) or not handle.args or not isinstance(ctx.context, MemberExpr):
        return ctx.default_attr_type
    attribute = ctx.context.name
    actor = get_proper_type(handle.args[0])
    if not isinstance(actor, Instance):
        return ctx.default_attr_type
    symbol = actor.type.get(attribute)
    node = symbol.node if symbol is not None else None
    func = node.func if isinstance(node, Decorator) else node
    if not isinstance(func, FuncDef) or func.is_generator:
        return ctx.default_attr_type  # an unknown name, an overload, or a generator whose items stream
    signature = get_proper_type(func.type)
    if not isinstance(signature, CallableType) or not signature.arg_types:
        return ctx.default_attr_type
    result = get_proper_type(signature.ret_type)
    if func.is_coroutine and isinstance(result, Instance) and result.args:
        result = get_proper_type(result.args[-1])  # async def: Coroutine[Any, Any, T] -> T
    skip = 0 if func.is_static else 1  # self (or cls) is not the caller's
    parameters = Parameters(signature.arg_types[skip:], signature.arg_kinds[skip:], signature.arg_names[skip:])
    module, _, name = _METHOD.rpartition(".")
    # The checker's own table: named_generic_type asserts on a name it has not bound yet.
    found = ctx.api.modules.get(module) if isinstance(ctx.api, TypeChecker) else None
    typed_method = found.names.get(name) if found is not None else None
    if typed_method is None or not isinstance(typed_method.node, TypeInfo):
        return ctx.default_attr_type
    return Instance(typed_method.node, [parameters, result])


def plugin(version: str) -> type[Plugin]:
    return ActorhubPlugin
