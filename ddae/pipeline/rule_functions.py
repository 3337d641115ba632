"""Input, params and resource functions whose parameters Snakemake reads once (issue 21:
``snakemake -n`` on config.yaml within 2.5 s on 2 cores).

Snakemake passes a rule's function only the optional arguments it declares (``input``,
``output``, ``threads``, ...) and finds them with `inspect.signature` on every call, for every
item of every job, up to three times per params function (`snakemake.common.
get_function_params`): about 9,000 inspections for the paper's 477 jobs. A function that carries
its parameters is not inspected (`snakemake.common.overwrite_function_params`, which Snakemake's
own ``subpath`` and ``prepend_param`` wrappers use):

* `known_parameters(function)` marks one function (a closure a method returns);
* ``@rule_functions`` marks every method (or static method) of a class that takes ``wildcards``
  first, a method with the parameters of the bound method (without ``self``): what the rules
  hold is ``layout.method``.

Imports no torch: every Snakemake process, cluster jobs included, runs this while it parses.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from snakemake.common import overwrite_function_params

Function = TypeVar("Function", bound=Callable[..., Any])
Class = TypeVar("Class", bound=type)


def known_parameters(function: Function) -> Function:
    """``function``, carrying its parameters for Snakemake (module docstring)."""
    overwrite_function_params(function, inspect.signature(function).parameters)
    return function


def rule_functions(cls: Class) -> Class:
    """``cls``, each of its methods ``(self, wildcards, ...)`` carrying the parameters of the
    bound method (Snakemake reads a bound method's attributes from its function), and each
    static method ``(wildcards, ...)`` its own."""
    for member in vars(cls).values():
        static = isinstance(member, staticmethod)
        function = member.__func__ if static else member
        if inspect.isfunction(function):
            parameters = list(inspect.signature(function).parameters.values())
            parameters = parameters if static else parameters[1:]  # a bound method: no self
            if parameters and parameters[0].name == "wildcards":
                overwrite_function_params(function, inspect.Signature(parameters).parameters)
    return cls
