"""Task names and the base URLs of the model services that serve them, as configured for
the gateway (`MTC_GATEWAY_UPSTREAMS`) and the jobs worker (`MTC_JOBS_UPSTREAMS`)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, AnyHttpUrl, BeforeValidator, ValidationError

TASK_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def check_task_name(task: str) -> None:
    """Raise ValueError unless `task` is a valid task name."""
    if not TASK_NAME_PATTERN.fullmatch(task):
        raise ValueError(f"task name {task!r} does not match {TASK_NAME_PATTERN.pattern}")


def one_url_is_a_list_of_one(upstreams: object) -> object:
    """`{"task": "http://a"}` as `{"task": ["http://a"]}`; anything else unchanged (for a
    `mode="before"` validator)."""
    if isinstance(upstreams, dict):
        return {task: [urls] if isinstance(urls, str) else urls for task, urls in upstreams.items()}
    return upstreams


def check_upstreams(upstreams: dict[str, list[str]]) -> dict[str, list[str]]:
    """Valid task names, each with one or more distinct http(s) base URLs, normalised."""
    checked: dict[str, list[str]] = {}
    for task, urls in upstreams.items():
        check_task_name(task)
        if not urls:
            raise ValueError(f"task {task!r} has an empty list of upstream URLs")
        normalised = [normalise_base_url(task, url) for url in urls]
        if len(set(normalised)) != len(normalised):
            raise ValueError(f"task {task!r} lists the same upstream URL twice")
        checked[task] = normalised
    return checked


def normalise_base_url(task: str, url: str) -> str:
    """`url` checked as an http(s) base URL without query or fragment, without a trailing
    slash (paths are appended to it)."""
    try:
        parsed = AnyHttpUrl(url)
    except ValidationError as error:
        reason = error.errors()[0]["msg"]
        raise ValueError(f"upstream URL for task {task!r} is invalid ({url!r}): {reason}") from None
    if parsed.query or parsed.fragment:
        raise ValueError(f"upstream URL for task {task!r} must not have a query or fragment")
    return str(parsed).rstrip("/")


UpstreamUrls = Annotated[
    dict[str, list[str]],
    BeforeValidator(one_url_is_a_list_of_one),
    AfterValidator(check_upstreams),
]
"""A settings field of task names and their upstreams' base URLs (`check_upstreams`), where
one URL stands for a list of one."""
