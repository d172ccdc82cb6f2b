"""Deterministic worked solutions for integer arithmetic expressions.

reasoning-gym's arithmetic datasets give a question and a final answer but no
solution. We parse the expression with Python's `ast` (reasoning-gym evaluates
its expressions with `eval` after replacing "/" by "//", so Python's precedence
and floor division are the ground truth) and emit one step per binary
operation, in Python's evaluation order (post-order, left before right).
"""

from __future__ import annotations

import ast

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "/", ast.Div: "/"}


def _apply(op: str, a: int, b: int) -> int:
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  if b == 0:
    raise ZeroDivisionError("division by zero in expression")
  return a // b  # floor division, as reasoning-gym's eval_floordiv


def solve(expression: str, *, compact: bool = False) -> tuple[list[str], int]:
  """Returns (steps, value) for an expression of integers, + - * / and parentheses.

  Each step reads "a op b = c" ("a op b=c"-style without spaces if `compact`).
  Negating a literal is folded into the literal; negating a group is a step.
  """
  try:
    tree = ast.parse(expression.replace("/", "//"), mode="eval")
  except SyntaxError as e:
    raise ValueError(f"Not an arithmetic expression: {expression!r}") from e
  steps: list[str] = []
  sep = "" if compact else " "

  def visit(node) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
      return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
      value = visit(node.operand)
      result = -value if isinstance(node.op, ast.USub) else value
      if not isinstance(node.operand, ast.Constant):
        steps.append(f"-({value}){sep}={sep}{result}")
      return result
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
      a, b = visit(node.left), visit(node.right)
      op = _OPS[type(node.op)]
      result = _apply(op, a, b)
      steps.append(f"{a}{sep}{op}{sep}{b}{sep}={sep}{result}")
      return result
    raise ValueError(f"Unsupported syntax {ast.dump(node)} in expression {expression!r}")

  value = visit(tree.body)
  return steps, value
