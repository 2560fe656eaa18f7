"""Functions defined in an importable module, for the remote-traceback tests.

The line that raises is marked so the tests can find its number.
"""

from __future__ import annotations


def divide(a: float, b: float) -> float:
    ratio = a / b  # the raising line
    return ratio


class Account:
    def __init__(self, balance: int) -> None:
        if balance < 0:
            raise ValueError(f"negative opening balance {balance}")  # the constructor's raise
        self.balance = balance

    def withdraw(self, amount: int) -> int:
        if amount > self.balance:
            raise RuntimeError("insufficient funds")  # the method's raise
        self.balance -= amount
        return self.balance
