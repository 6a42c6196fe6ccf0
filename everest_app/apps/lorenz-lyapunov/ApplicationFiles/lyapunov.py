"""The Lyapunov spectrum of the Lorenz system (Python port of the paper's Maple application).

Reads rho, sigma, beta from rho.txt, sigma.txt, beta.txt and the integration time from
time.txt (default 500), writes the exponents to lap1.txt, lap2.txt, lap3.txt (largest
first) and prints a summary. Standard library only, Python >= 3.8.

Method (Benettin et al.): integrate the system and three tangent vectors with classical
fourth-order Runge-Kutta, step 0.01; after each step orthonormalise the tangent vectors
(Gram-Schmidt) and add the logarithms of their stretch factors; after a transient of 10 time
units the sums divided by the elapsed time are the exponents.
"""
import math
import os
import sys

DT = 0.01
TRANSIENT = 10.0


def read_number(name, default=None):
    """The number in file ``name``; ``default`` when the file is absent."""
    if not os.path.exists(name):
        if default is None:
            sys.exit("missing input file " + name)
        return default
    with open(name, encoding="utf-8") as f:
        text = f.read().strip()
    try:
        return float(text)
    except ValueError:
        sys.exit(f"{name} does not hold a number: {text[:50]!r}")


def spectrum(rho, sigma, beta, t_total, dt=DT, transient=TRANSIENT):
    """The three exponents, largest first, averaged over ``t_total`` after ``transient``."""
    x, y, z = 1.0, 1.0, 1.0
    basis = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    sums = [0.0, 0.0, 0.0]
    skip = int(round(transient / dt))
    steps = int(round(t_total / dt))

    def flow(x, y, z, vs):
        # the field at (x, y, z) and the Jacobian applied to each tangent vector
        r_z = rho - z
        out = [(sigma * (c - a), r_z * a - c - x * e, y * a + x * c - beta * e)
               for (a, c, e) in vs]
        return (sigma * (y - x), x * r_z - y, x * y - beta * z), out

    def shifted(vs, ds, h):
        return [(a + h * d[0], c + h * d[1], e + h * d[2]) for (a, c, e), d in zip(vs, ds)]  # noqa: B905 (3.8)

    h = dt
    for step in range(skip + steps):
        (p1, v1) = flow(x, y, z, basis)
        (p2, v2) = flow(x + h / 2 * p1[0], y + h / 2 * p1[1], z + h / 2 * p1[2],
                        shifted(basis, v1, h / 2))
        (p3, v3) = flow(x + h / 2 * p2[0], y + h / 2 * p2[1], z + h / 2 * p2[2],
                        shifted(basis, v2, h / 2))
        (p4, v4) = flow(x + h * p3[0], y + h * p3[1], z + h * p3[2], shifted(basis, v3, h))
        x += h / 6 * (p1[0] + 2 * p2[0] + 2 * p3[0] + p4[0])
        y += h / 6 * (p1[1] + 2 * p2[1] + 2 * p3[1] + p4[1])
        z += h / 6 * (p1[2] + 2 * p2[2] + 2 * p3[2] + p4[2])
        moved = [tuple(vec[j] + h / 6 * (v1[i][j] + 2 * v2[i][j] + 2 * v3[i][j] + v4[i][j])
                       for j in range(3)) for i, vec in enumerate(basis)]
        basis = []
        for i, w in enumerate(moved):
            for u in basis:
                d = w[0] * u[0] + w[1] * u[1] + w[2] * u[2]
                w = (w[0] - d * u[0], w[1] - d * u[1], w[2] - d * u[2])
            norm = math.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
            if step >= skip:
                sums[i] += math.log(norm)
            basis.append((w[0] / norm, w[1] / norm, w[2] / norm))
    return [s / (steps * dt) for s in sums]


def main():
    rho = read_number("rho.txt")
    sigma = read_number("sigma.txt")
    beta = read_number("beta.txt")
    t_total = read_number("time.txt", 500.0)
    if not 1 <= t_total <= 100000:
        sys.exit(f"integration time must be between 1 and 100000, got {t_total:g}")
    exps = spectrum(rho, sigma, beta, t_total)
    for i, value in enumerate(exps, 1):
        with open(f"lap{i}.txt", "w", encoding="utf-8") as f:
            f.write(repr(value) + "\n")
    print(f"Lorenz rho={rho:g} sigma={sigma:g} beta={beta:g}, t={t_total:g}")
    print(f"L1={exps[0]:.6f} L2={exps[1]:.6f} L3={exps[2]:.6f} sum={sum(exps):.6f} "
          f"(expected {-(sigma + 1 + beta):.6f})")


if __name__ == "__main__":
    main()
