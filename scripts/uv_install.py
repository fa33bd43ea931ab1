"""Install into an environment with uv, from where pip would install: scripts/setup's fast path.

uv reads none of pip's settings (pip.conf, the PIP_* variables), so this asks the pip of the
interpreter running it which indexes, links, constraints, certificate and proxy its ``pip
install`` would use, and passes the same to ``uv pip install`` (``--index-strategy
unsafe-best-match``: the best version across every index, as pip picks, where uv's default takes
a package from the first index that has it). A pip setting uv cannot follow the same way
(pre-releases, --no-binary/--only-binary, required hashes, a client certificate) exits 3 naming
it, so that scripts/setup installs with pip instead: uv must install exactly what pip would.

Usage: python scripts/uv_install.py [--print] UV PYTHON REQUIREMENT... (--print writes the
command, one argument a line, and the variables it sets, instead of running it.)
"""

from __future__ import annotations

import os
import sys

NO_UV = 3  # the exit status that tells scripts/setup to install with pip instead


def uv_command(uv: str, python: str, requirements: list[str]) -> tuple[list[str], dict[str, str]]:
    """The ``uv pip install`` command and the variables it needs to install ``requirements``
    into ``python``'s environment from where this interpreter's pip would; ValueError naming
    the pip setting uv would not follow the same way."""
    from pip._internal.commands import create_command  # pip's own reading of its settings

    options, _ = create_command("install").parse_args([])
    unfollowed = [name for name, value in (
        ("pre (pre-releases)", options.pre),
        ("no-binary", options.format_control.no_binary),
        ("only-binary", options.format_control.only_binary),
        ("require-hashes", options.require_hashes),
        ("client-cert", options.client_cert),
    ) if value]
    if unfollowed:
        raise ValueError(f"pip is set up with {', '.join(unfollowed)}, which uv would not "
                         "follow the same way")
    command = [uv, "pip", "install", "--python", python, "--index-strategy", "unsafe-best-match"]
    if options.no_index:
        command.append("--no-index")
    else:
        command += ["--index-url", options.index_url]
        for url in options.extra_index_urls:
            command += ["--extra-index-url", url]
    for place in options.find_links:
        command += ["--find-links", place]
    for constraints in options.constraints:
        command += ["--constraint", constraints]
    for host in options.trusted_hosts:
        command += ["--allow-insecure-host", host]
    env: dict[str, str] = {}
    if options.cert:
        env["SSL_CERT_FILE"] = options.cert
    if options.proxy:
        env["HTTP_PROXY"] = env["HTTPS_PROXY"] = options.proxy
    return command + requirements, env


def main(argv: list[str]) -> int:
    show = argv[:1] == ["--print"]
    if show:
        argv = argv[1:]
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        command, env = uv_command(argv[0], argv[1], argv[2:])
    except ValueError as refused:
        print(f"setup: {refused}: installing with pip instead", file=sys.stderr)
        return NO_UV
    except (ImportError, AttributeError) as unread:  # a pip whose settings read otherwise
        print(f"setup: pip's settings could not be read ({unread!r}): installing with pip "
              "instead", file=sys.stderr)
        return NO_UV
    if show:
        print("\n".join([*command, *(f"{name}={value}" for name, value in env.items())]))
        return 0
    os.execve(command[0], command, {**os.environ, **env})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
