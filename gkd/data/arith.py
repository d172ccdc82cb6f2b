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


def signed_terms(expression: str) -> list[int]:
  """The signed terms of a chain of + and − over integers: "12+45-6" → [12, 45, -6]."""
  terms, sign, digits = [], 1, ""
  for i, ch in enumerate(expression.replace(" ", "")):
    if ch.isdigit():
      digits += ch
    elif ch in "+-" and digits:
      terms.append(sign * int(digits))
      sign, digits = (1 if ch == "+" else -1), ""
    elif ch == "-" and i == 0:
      sign = -1
    else:
      raise ValueError(f"Not a chain of + and - over integers: {expression!r}")
  if not digits:
    raise ValueError(f"Not a chain of + and - over integers: {expression!r}")
  return terms + [sign * int(digits)]


def _term_step(total: int, term: int) -> str:
  return f"{total}{'-' if term < 0 else '+'}{abs(term)}={total + term}"


def sum_in_order(terms: list[int], order: list[int]) -> tuple[list[str], int]:
  """Steps adding `terms` in the order of the indices `order` (a permutation): the running
  total, the next term's sign and size, its new value, e.g. [-6, 12] → "-6+12=6"."""
  if sorted(order) != list(range(len(terms))) or len(terms) < 2:
    raise ValueError(f"order {order} is not a permutation of {len(terms)} >= 2 terms")
  total, steps = terms[order[0]], []
  for i in order[1:]:
    steps.append(_term_step(total, terms[i]))
    total += terms[i]
  return steps, total


def first_bad_step(terms: list[int], completion: str) -> int | None:
  """Checks a "steps. Answer: N" solution of a term sum in any order; returns the index of its
  first wrong step (len(steps) when only the answer or a missing term is wrong), or None.

  A step is right when it adds an unused term (by its sign and size; 0 and −0 are one term) to
  the running total without an arithmetic slip; the first step starts from an unused term.
  """
  body, _, answer = completion.partition(". Answer: ")
  steps = [s.strip() for s in body.split(",")] if body.strip() else []
  unused, total = list(terms), None
  for k, step in enumerate(steps):
    left, _, result = step.partition("=")
    try:
      a_text, sign, b_text = _split_step(left)
      a, b, c = int(a_text), int(b_text) * (-1 if sign == "-" else 1), int(result)
    except ValueError:
      return k
    if total is None:  # the first step starts from a term of the sum
      if a not in unused:
        return k
      unused.remove(a)
    if (total is not None and a != total) or b not in unused or a + b != c:
      return k
    unused.remove(b)
    total = c
  if unused or answer.strip() != str(sum(terms)):
    return len(steps)
  return None


def _split_step(left: str) -> tuple[str, str, str]:
  """"-12+5" → ("-12", "+", "5"): the operator is the last + or − after the first character."""
  cut = max(left.rfind("+"), left.rfind("-"))
  if cut < 1:
    raise ValueError(left)
  return left[:cut], left[cut], left[cut + 1:]
