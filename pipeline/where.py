"""The ``--where`` preselection: a small expression language evaluated without ``eval``.

A survey configuration is shared, so its preselection must never run code. The
expression is parsed with Python's :mod:`ast` and only an allow-listed set of nodes is
accepted; the tree is then evaluated here, on the catalogue's columns, with NumPy and
pandas. Nothing in the expression can reach a module, an attribute, a method or a file.

Allowed:

* column names (bare, or in backticks for names that are not identifiers, as in
  pandas: `` `mag r` < 22 ``), numbers, strings, ``True``/``False``, ``nan``, ``inf``;
* comparisons ``== != < <= > >=``, chained as in ``20 < mag_r < 22``;
* ``and``/``or``/``not`` and their pandas spellings ``&``/``|``/``~`` (per row);
* ``x in [a, b, ...]`` and ``x not in [...]`` with a list or tuple of constants;
* arithmetic ``+ - * / // % **`` and unary ``-``/``+``;
* the functions in :data:`FUNCTIONS` (``abs``, ``sqrt``, ``log10``, ``isnan``, ...).
"""

from __future__ import annotations

import ast
import operator
from typing import Any

import numpy as np
import pandas as pd

#: The named functions a preselection may call, each on one argument.
FUNCTIONS = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "log": np.log,
    "log10": np.log10,
    "exp": np.exp,
    "isnan": pd.isna,
    "isfinite": lambda values: np.isfinite(pd.to_numeric(values, errors="coerce")),
}
CONSTANTS = {"nan": float("nan"), "inf": float("inf")}
_COMPARISONS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
                ast.Gt: operator.gt, ast.GtE: operator.ge}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
               ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
ALLOWED = ("column names (`name with spaces` in backticks), numbers, 'strings', True/False, nan, inf; "
           "== != < <= > >=; and or not (& | ~); in [...] / not in [...]; + - * / // % **; "
           f"functions {', '.join(FUNCTIONS)}")
_COLUMN_PREFIX = "__column_"
#: Longest expression accepted (a guard against pathological input, far above real use).
MAX_LENGTH = 4096


class WhereError(ValueError):
    """The preselection is not in the allowed language, or does not fit the catalogue."""


def _describe(node: ast.AST) -> str:
    names = {ast.Attribute: "attribute access (.)", ast.Call: "a call", ast.Subscript: "indexing ([...])",
             ast.Lambda: "lambda", ast.NamedExpr: ":=", ast.IfExp: "if/else", ast.Starred: "*",
             ast.BinOp: "this operator", ast.Compare: "this comparison", ast.Dict: "a dict", ast.Set: "a set",
             ast.ListComp: "a comprehension", ast.GeneratorExp: "a comprehension"}
    if isinstance(node, ast.BinOp):
        return f"the operator {type(node.op).__name__}"
    if isinstance(node, ast.UnaryOp):
        return f"the unary operator {type(node.op).__name__}"
    return names.get(type(node), type(node).__name__)


def _replace_backticks(expression: str) -> tuple[str, dict[str, str]]:
    """Backtick-quoted column names -> placeholder identifiers (outside string literals)."""
    out, names, index, quote = [], {}, 0, None
    while index < len(expression):
        char = expression[index]
        if quote:
            out.append(char)
            if char == "\\" and index + 1 < len(expression):
                out.append(expression[index + 1])
                index += 1
            elif char == quote:
                quote = None
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "`":
            end = expression.find("`", index + 1)
            if end < 0:
                raise WhereError(f"--where {expression!r}: unmatched backtick at column {index + 1}")
            placeholder = f"{_COLUMN_PREFIX}{len(names)}"
            names[placeholder] = expression[index + 1:end]
            out.append(placeholder)
            index = end
        else:
            out.append(char)
        index += 1
    return "".join(out), names


class Preselection:
    """A parsed, checked ``--where`` expression; :meth:`evaluate` applies it to a catalogue."""

    def __init__(self, expression: str):
        self.expression = expression
        if not isinstance(expression, str) or not expression.strip():
            raise WhereError("--where is empty; give a condition such as 'mag_r < 22'")
        if len(expression) > MAX_LENGTH:
            raise WhereError(f"--where is {len(expression)} characters long; at most {MAX_LENGTH} are allowed")
        source, self.quoted = _replace_backticks(expression.strip())
        try:
            self.tree = ast.parse(source, mode="eval")
            self._check(self.tree.body)
        except SyntaxError as error:
            where = f" at column {error.offset}" if error.offset and not self.quoted else ""
            raise WhereError(f"--where {expression!r}: syntax error{where}; allowed: {ALLOWED}") from None
        except (RecursionError, MemoryError):
            raise WhereError(f"--where {expression!r}: nested too deeply") from None

    def _unsupported(self, node: ast.AST) -> WhereError:
        column = getattr(node, "col_offset", None)
        at = f" at column {column + 1}" if column is not None and not self.quoted else ""
        return WhereError(f"--where {self.expression!r}: unsupported syntax: {_describe(node)}{at}; allowed: {ALLOWED}")

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.Not, ast.Invert, ast.USub, ast.UAdd)):
                raise self._unsupported(node)
            self._check(node.operand)
        elif isinstance(node, ast.BinOp):
            if not isinstance(node.op, (*_ARITHMETIC, ast.BitAnd, ast.BitOr)):
                raise self._unsupported(node)
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.Compare):
            self._check(node.left)
            for op, right in zip(node.ops, node.comparators):
                if isinstance(op, (ast.In, ast.NotIn)):
                    if not isinstance(right, (ast.List, ast.Tuple)) or not all(
                            self._is_constant(item) for item in right.elts):
                        raise WhereError(f"--where {self.expression!r}: 'in' needs a list of constants on its "
                                         "right, e.g. band in ['g', 'r']")
                elif type(op) in _COMPARISONS:
                    self._check(right)
                else:  # is, is not
                    word = "is not" if isinstance(op, ast.IsNot) else "is"
                    raise WhereError(f"--where {self.expression!r}: unsupported syntax: the comparison '{word}'; "
                                     f"allowed: {ALLOWED}")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise self._unsupported(node.func)
            if node.func.id not in FUNCTIONS:
                raise WhereError(f"--where {self.expression!r}: unsupported syntax: a call of {node.func.id}(); "
                                 f"allowed: {ALLOWED}")
            if node.keywords or len(node.args) != 1:
                raise WhereError(f"--where {self.expression!r}: {node.func.id}() takes exactly one argument")
            self._check(node.args[0])
        elif isinstance(node, ast.Name):
            pass  # resolved against the catalogue's columns when evaluated
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool)):
                raise self._unsupported(node)
        else:
            raise self._unsupported(node)

    @staticmethod
    def _is_constant(node: ast.AST) -> bool:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            node = node.operand
        return isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool))

    def evaluate(self, catalog: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows that pass; missing values compare as False."""
        try:
            value = self._eval(self.tree.body, catalog)
        except RecursionError:
            raise WhereError(f"--where {self.expression!r}: nested too deeply") from None
        if isinstance(value, pd.Series) and (value.dtype == bool or isinstance(value.dtype, pd.BooleanDtype)):
            return _plain_bool(value).to_numpy()
        if isinstance(value, (bool, np.bool_)):
            return np.full(len(catalog), bool(value))
        raise WhereError(f"--where {self.expression!r} must be a condition (true/false per row), e.g. 'mag_r < 22'")

    # -- evaluation -------------------------------------------------------------------

    def _condition(self, value: Any, word: str) -> Any:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, pd.Series) and (value.dtype == bool or isinstance(value.dtype, pd.BooleanDtype)):
            return _plain_bool(value)
        raise WhereError(f"--where {self.expression!r}: '{word}' needs conditions (true/false per row) on both "
                         "sides; put comparisons in parentheses, e.g. (mag_r < 22) & (flag == 0)")

    def _eval(self, node: ast.AST, catalog: pd.DataFrame) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            name = self.quoted.get(node.id, node.id)
            if name in catalog.columns:
                return catalog[name]
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            raise WhereError(f"--where {self.expression!r}: no column named {name!r}; "
                             f"columns are: {', '.join(map(str, catalog.columns))}")
        if isinstance(node, ast.BoolOp):
            word = "and" if isinstance(node.op, ast.And) else "or"
            values = [self._condition(self._eval(value, catalog), word) for value in node.values]
            result = values[0]
            for value in values[1:]:
                result = (result & value) if word == "and" else (result | value)
            return result
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, catalog)
            if isinstance(node.op, (ast.Not, ast.Invert)):
                operand = self._condition(operand, "not")
                return (not operand) if isinstance(operand, bool) else ~operand
            operand = self._number(operand)
            return self._arithmetic(lambda: -operand if isinstance(node.op, ast.USub) else +operand)
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, catalog), self._eval(node.right, catalog)
            if isinstance(node.op, (ast.BitAnd, ast.BitOr)):
                word = "&" if isinstance(node.op, ast.BitAnd) else "|"
                left, right = self._condition(left, word), self._condition(right, word)
                return (left & right) if word == "&" else (left | right)
            left, right = self._number(left), self._number(right)
            return self._arithmetic(lambda: _ARITHMETIC[type(node.op)](left, right))
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, catalog)
            result = None
            for op, right_node in zip(node.ops, node.comparators):
                if isinstance(op, (ast.In, ast.NotIn)):
                    items = [ast.literal_eval(item) for item in right_node.elts]
                    series = left if isinstance(left, pd.Series) else pd.Series([left] * len(catalog),
                                                                                index=catalog.index)
                    value = series.isin(items)
                    value = ~value if isinstance(op, ast.NotIn) else value
                    right = None
                else:
                    right = self._eval(right_node, catalog)
                    value = self._arithmetic(lambda: _COMPARISONS[type(op)](left, right), comparing=True)
                    if not isinstance(value, pd.Series):
                        value = pd.Series(np.full(len(catalog), bool(value)), index=catalog.index)
                value = _plain_bool(value)
                result = value if result is None else (result & value)
                left = right
            return result
        if isinstance(node, ast.Call):
            argument = self._eval(node.args[0], catalog)
            return self._arithmetic(lambda: FUNCTIONS[node.func.id](argument))
        raise self._unsupported(node)  # _check accepted nothing else

    def _number(self, value: Any) -> Any:
        """An arithmetic operand: a numeric column, or a scalar as float64 (no huge Python ints)."""
        if isinstance(value, pd.Series):
            if pd.api.types.is_numeric_dtype(value.dtype):
                return value
            raise WhereError(f"--where {self.expression!r}: arithmetic needs numeric columns, but "
                             f"{value.name!r} holds {value.dtype}")
        if isinstance(value, (bool, int, float, np.number)):
            return np.float64(value)
        raise WhereError(f"--where {self.expression!r}: arithmetic needs numbers, not {value!r}")

    def _arithmetic(self, compute, comparing: bool = False) -> Any:
        try:
            with np.errstate(all="ignore"):
                return compute()
        except (TypeError, ValueError, AttributeError, OverflowError, ZeroDivisionError) as error:
            what = "compare" if comparing else "compute"
            raise WhereError(f"--where {self.expression!r}: cannot {what} this on the catalogue's columns "
                             f"({error}); are the column types what you expect?") from None


def _plain_bool(values: pd.Series) -> pd.Series:
    """A boolean column without missing values: a missing comparison (pd.NA) counts as False."""
    if isinstance(values.dtype, pd.BooleanDtype):
        return values.fillna(False).astype(bool)
    return values.astype(bool)


def parse_where(expression: str | None) -> Preselection | None:
    """The checked preselection, or None; raises :class:`WhereError` for anything not allowed."""
    if expression is None:
        return None
    return Preselection(expression)
