"""API keys: the keys file, checking a presented key, and `python -m gateway.api_keys`.

The gateway never stores a key, only its SHA-256. Keys are long random strings (see
`new_api_key`), so a plain SHA-256 cannot be reversed by guessing; a slow password hash
would only add latency to every request. The file holds one key per line:

    # NAME       SHA256 OF THE KEY (64 hex digits)                                  OPTIONS
    alice        2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
    batch-jobs   fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9  rate=50 burst=100
    team-a       8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92  s3=calls/team-a/

`rate` (tokens per second) and `burst` override the default quota for that key; `rate=0`
exempts it. `s3=bucket/prefix[,bucket/prefix...]` names the S3 locations the key may read
and write (within the services' allow-lists); without it, a key gets its own folder
`<entry>/<name>/` under each allow-listed entry. Names identify keys in logs, quota
counters and S3 folders, and must be unique.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.wire.s3_locations import S3Scope, check_allowlist_entries

logger = logging.getLogger(__name__)

KEY_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
SHA256_HEX_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
KEY_PREFIX = "mtc_"
# Longer presented keys are refused without hashing them (no work for junk headers).
MAX_KEY_LENGTH = 256
# The locations travel to the services in a header: keep it small.
MAX_S3_LOCATIONS = 16


class ApiKeysFileError(ValueError):
    """The keys file cannot be read or has an invalid line (the message says which)."""


@dataclass(frozen=True)
class ApiKey:
    """A key the gateway accepts, known by its name and the SHA-256 of its value."""

    name: str
    sha256: bytes
    rate_per_second: float | None = None
    """Quota override (tokens per second); None keeps the gateway's default."""
    burst: int | None = None
    """Bucket size override; None keeps the gateway's default."""
    s3_locations: tuple[str, ...] | None = None
    """The key's own `bucket/prefix` S3 locations (`s3=`); None: its folder under each
    allow-listed entry (see `S3Scope`)."""

    @property
    def s3_scope(self) -> S3Scope:
        """The S3 locations this key may name."""
        return S3Scope(tenant=self.name, locations=self.s3_locations)


def hash_api_key(key: str) -> str:
    """The SHA-256 of a key, as the 64 hex digits the keys file holds."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    """A new random key: 256 bits from the OS generator, URL-safe, with a `mtc_` prefix
    so leaked keys are easy to recognise."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_api_keys(text: str, source: str) -> list[ApiKey]:
    """Every key listed in a keys file's text; `ApiKeysFileError` naming `source` and the
    line for the first invalid one."""
    keys, problems = read_api_key_lines(text, source)
    if problems:
        raise ApiKeysFileError(problems[0])
    return keys


def read_api_key_lines(text: str, source: str) -> tuple[list[ApiKey], list[str]]:
    """The keys of a keys file's valid lines, and a message (naming `source` and the line)
    for each invalid one. A line that repeats an earlier line's name or key is invalid;
    the earlier line stands."""
    keys: list[ApiKey] = []
    problems: list[str] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            key = _parse_line(line, f"{source} line {number}", names, digests)
        except ApiKeysFileError as problem:
            problems.append(str(problem))
            continue
        names.add(key.name)
        digests.add(key.sha256)
        keys.append(key)
    return keys, problems


def _parse_line(line: str, where: str, names: set[str], digests: set[bytes]) -> ApiKey:
    fields = line.split()
    if len(fields) < 2:
        raise ApiKeysFileError(
            f"{where}: expected NAME SHA256_HEX [rate=N] [burst=N] [s3=bucket/prefix,...]"
        )
    name, digest_hex, *options = fields
    if not KEY_NAME_PATTERN.fullmatch(name):
        raise ApiKeysFileError(f"{where}: key name {name!r} must match {KEY_NAME_PATTERN.pattern}")
    if not SHA256_HEX_PATTERN.fullmatch(digest_hex):
        raise ApiKeysFileError(
            f"{where}: expected NAME SHA256_HEX (64 hex digits) after the name; "
            "hash a key with `python -m gateway.api_keys hash NAME`"
        )
    digest = bytes.fromhex(digest_hex)
    if name in names:
        raise ApiKeysFileError(f"{where}: key name {name!r} is listed twice")
    if digest in digests:
        raise ApiKeysFileError(f"{where}: the same key is listed twice")
    rate, burst, s3_locations = _parse_options(options, where)
    return ApiKey(name, digest, rate, burst, s3_locations)


def _parse_options(
    options: Sequence[str], where: str
) -> tuple[float | None, int | None, tuple[str, ...] | None]:
    rate: float | None = None
    burst: int | None = None
    s3_locations: tuple[str, ...] | None = None
    for option in options:
        field, _, value = option.partition("=")
        if field == "s3":
            s3_locations = _parse_s3_locations(value, where)
            continue
        if field not in ("rate", "burst"):
            raise ApiKeysFileError(f"{where}: unknown option {option!r} (rate=, burst=, s3=)")
        try:
            if field == "rate":
                rate = float(value)
                valid = rate >= 0
            else:
                burst = int(value)
                valid = burst >= 1
        except ValueError:
            valid = False
        if not valid:
            raise ApiKeysFileError(f"{where}: {option!r} needs a number (rate >= 0, burst >= 1)")
    return rate, burst, s3_locations


def _parse_s3_locations(value: str, where: str) -> tuple[str, ...]:
    entries = value.split(",")
    if len(entries) > MAX_S3_LOCATIONS:
        raise ApiKeysFileError(f"{where}: at most {MAX_S3_LOCATIONS} s3= locations")
    try:
        check_allowlist_entries(entries)
    except ValueError as error:
        raise ApiKeysFileError(f"{where}: s3=: {error}") from None
    return tuple(entries)


class ApiKeyStore:
    """The accepted keys, read from a file and re-read when the file changes.

    A Kubernetes Secret mounted as a volume is updated in place by the kubelet, so a key
    rotated in the Secret is picked up within `reload_seconds`. At start every line must be
    valid (`ApiKeysFileError` otherwise). A changed file takes effect line by line: its
    valid lines become the accepted keys and each invalid line is logged as an error and
    left out, because refusing the whole file would keep a key revoked in it working. A
    file that cannot be read at all (a Secret being swapped) leaves the keys as they are.
    """

    def __init__(
        self,
        path: Path,
        *,
        reload_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.reload_seconds = reload_seconds
        self._clock = clock
        self._signature = self._file_signature()
        self._keys = parse_api_keys(self._text(), str(self.path))
        self._next_check = clock() + reload_seconds
        if not self._keys:
            logger.warning("%s lists no API keys: every protected request will get 401", path)

    @property
    def names(self) -> list[str]:
        return [key.name for key in self._keys]

    def identify(self, presented: str) -> ApiKey | None:
        """The key whose hash matches `presented`, or None.

        Every stored hash is compared, in constant time, whatever matched, so the answer
        time says nothing about which stored hash came close.
        """
        self._reload_if_changed()
        if not presented or len(presented) > MAX_KEY_LENGTH:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: ApiKey | None = None
        for key in self._keys:
            if hmac.compare_digest(key.sha256, digest):
                found = key
        return found

    def _reload_if_changed(self) -> None:
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self.reload_seconds
        try:
            signature = self._file_signature()
            if signature == self._signature:
                return
            keys, problems = read_api_key_lines(self._text(), str(self.path))
        except ApiKeysFileError as error:
            logger.error("keeping the API keys already loaded: %s", error)
            return
        self._signature = signature
        self._keys = keys
        for problem in problems:
            # No key material in the message: it names the file, the line and the name.
            logger.error("API keys file: skipped an invalid line: %s", problem)
        logger.log(
            logging.ERROR if problems else logging.INFO,
            "reloaded %d API keys from %s%s",
            len(keys),
            self.path,
            f"; {len(problems)} invalid lines skipped, fix them" if problems else "",
        )

    def _file_signature(self) -> tuple[int, int, int]:
        try:
            stat = os.stat(self.path)  # follows the symlinks of a mounted Secret
        except OSError as error:
            raise ApiKeysFileError(f"cannot read API keys file {self.path}: {error}") from None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ApiKeysFileError(f"cannot read API keys file {self.path}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.api_keys new NAME` / `hash NAME`: make lines for the keys file."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway.api_keys",
        description="Make API keys and the lines of the gateway's keys file "
        "(MTC_GATEWAY_API_KEYS_FILE). The file holds only hashes.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser(
        "new", help="generate a random key; print it (once) and its line for the keys file"
    )
    hashed = commands.add_parser(
        "hash",
        help="read an existing key from standard input (not the command line, which shell "
        "history and `ps` would keep) and print its line for the keys file",
    )
    for command in (new, hashed):
        command.add_argument("name", help="name of the key, shown in logs and quota counters")
        command.add_argument("--rate", type=float, help="quota tokens per second for this key")
        command.add_argument("--burst", type=int, help="quota bucket size for this key")
        command.add_argument(
            "--s3",
            help="the key's own S3 locations, bucket/prefix[,bucket/prefix...] (default: "
            "its folder <entry>/NAME/ under each allow-listed entry)",
        )
    args = parser.parse_args(argv)
    if not KEY_NAME_PATTERN.fullmatch(args.name):
        parser.error(f"NAME must match {KEY_NAME_PATTERN.pattern}")
    if args.rate is not None and not args.rate >= 0:
        parser.error("--rate must be 0 (no quota) or more")
    if args.burst is not None and args.burst < 1:
        parser.error("--burst must be 1 or more")
    if args.s3 is not None:
        try:
            _parse_s3_locations(args.s3, "--s3")
        except ApiKeysFileError as error:
            parser.error(str(error))
    if args.command == "new":
        key = new_api_key()
        print(f"API key for {args.name} (hand it to its user; only its hash is kept):")
        print(f"  {key}")
        print("Line for the keys file:")
        print(f"  {_key_line(args.name, key, args.rate, args.burst, args.s3)}")
        return 0
    key = sys.stdin.readline().strip()
    if not key:
        print("no key on standard input", file=sys.stderr)
        return 2
    print(_key_line(args.name, key, args.rate, args.burst, args.s3))
    return 0


def _key_line(
    name: str, key: str, rate: float | None, burst: int | None, s3_locations: str | None
) -> str:
    options = [f"rate={rate:g}"] if rate is not None else []
    options += [f"burst={burst}"] if burst is not None else []
    options += [f"s3={s3_locations}"] if s3_locations is not None else []
    return " ".join([name, hash_api_key(key), *options])


if __name__ == "__main__":
    sys.exit(main())
