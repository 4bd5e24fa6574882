"""Prints the CPython `random.Random` values that test/datasets/PyRandom.test.ts pins, from CPython itself.

    python3 test/vectors/make_pyrandom_constants.py     # made with CPython 3.11.7

Other CPython 3 versions should print the same: the seeding, random(), getrandbits(), _randbelow()
and shuffle() algorithms have been stable across them; a difference would be worth a look.
`randbelow` is the private `_randbelow` (getrandbits-based rejection sampling) that shuffle() uses.
"""
import platform
import random

r = random.Random(42)
print(f"# CPython {platform.python_version()}")
print(f"seed 42: random() = {r.random()!r}")
print(f"         then getrandbits(32) = {r.getrandbits(32)}")
print(f"         then _randbelow(1000) = {r._randbelow(1000)}")
xs = list(range(20))
r.shuffle(xs)
print(f"         then shuffle(range(20)) = {xs}")
print(f"seed 2**40 + 5: random() = {random.Random(2 ** 40 + 5).random()!r}")
print(f"seed -42: random() = {random.Random(-42).random()!r} (the absolute value seeds: same as 42: {random.Random(42).random()!r})")
