"""The ``devtools`` world: an issue tracker and code repositories, and developer-assistant agents.

Entities: 600 issues (``ISS-1000`` …, Zipf popularity s = 1.0), 150 users (``U100`` …), 3 repositories
of 60 files each (``src/<pkg>/<mod>.py``), 80 issue queries and 40 code queries (Zipf s = 1.0).
An issue changes (a new comment; one change in ten also flips its status, one in three moves its
assignee) as a Poisson process of rate 1/900 s × rank^-0.5 (the most popular every 15 min, the
600th every 6 h), and on every write to it; a file changes every 2 h on average; users never.

Tools (read-only: the first six): ``search_issues(query, state)`` → the query's matching issues
(5 at most, open ones only unless ``state = "all"``); ``get_issue(issue_id)``;
``list_comments(issue_id, limit)`` → newest first; ``get_user(user_id)``; ``search_code(repo, query)``;
``get_file(repo, path)`` → plain text that mentions other files and issues; writes
``add_comment(issue_id, body)``, ``update_issue(issue_id, status)``, ``assign_issue(issue_id, user_id)``.

The agent (weights of its next action; "rank" weights pick among result items):

* first call: search_issues .55 (query Zipf, state "open" .85 / "all" .15), get_issue .30 (an issue
  the user names, Zipf), search_code .15;
* after search_issues: get_issue(items[r].id) .70 with r ~ .55/.20/.12/.08/.05, refine the search
  .12, search_code with the same query .05, end .13;
* after get_issue(X): list_comments(X, 20) .40, get_user(author .7 / assignee .3) .15,
  get_file(files[0]) .10, the next unopened search hit .10, add_comment .07, update_issue .04,
  assign_issue (a user seen) .03, end .11;
* after list_comments(X): get_user(comments[0] .6 / comments[1] .25 / the issue's author .15) .35,
  add_comment .18, get_issue(X) again .10, the next search hit .10, a new search .09, end .18;
* after get_user(U): get_issue(X) again .22, assign_issue(X, U) .12, list_comments(X) .10, the next
  search hit .10, a new search .16, end .30;
* after get_file: get_file(a path it mentions, r ~ .6/.3/.1) .35, get_issue(an issue it mentions)
  .25, search_code .15, end .25; after search_code: get_file(matches[r], r ~ .6/.25/.15) .70,
  another search_code .12, end .18; after a write to X: list_comments(X) .30, get_issue(X) .30, a
  new search .10, end .30.

An action whose inputs the agent has not seen drops out and the others are renormalised.
"""

from __future__ import annotations

import random
from typing import Any

from only1mcp.jobs.sim.agents import Step, Versions, World, ranked
from only1mcp.jobs.sim.workload import Zipf

__all__ = ["DevToolsWorld"]

_WORDS = ("login", "timeout", "cache", "crash", "upload", "search", "token", "memory", "retry", "deploy", "render",
          "export", "billing", "email", "latency", "queue", "schema", "sync", "webhook", "locale")
_PKGS = ("api", "core", "db", "ui", "auth", "jobs")
_TEAMS = ("platform", "frontend", "infra", "data", "mobile")
_READ = frozenset({"search_issues", "get_issue", "list_comments", "get_user", "search_code", "get_file"})
_WRITES = ("add_comment", "update_issue", "assign_issue")
_HIT_RANKS = (0.55, 0.20, 0.12, 0.08, 0.05)


class DevToolsWorld(World):
    name = "devtools"
    read_only = _READ
    session_gap_s, think_median_s, think_sigma, clients = 5.0, 4.0, 0.8, 24
    ISSUES, USERS, FILES, QUERIES, CODE_QUERIES = 600, 150, 60, 80, 40
    REPOS = ("core", "web", "infra")

    def __init__(self, seed: int | str) -> None:
        super().__init__(seed)
        rng = random.Random(f"devtools:world:{seed}")
        self.issues = [f"ISS-{1000 + i}" for i in range(self.ISSUES)]
        rng.shuffle(self.issues)  # popularity rank → issue
        self.rank = {issue: k + 1 for k, issue in enumerate(self.issues)}
        self.users = [f"U{100 + i}" for i in range(self.USERS)]
        self.files = {repo: [f"src/{rng.choice(_PKGS)}/{w}_{i}.py" for i, w in
                             enumerate(rng.choices(_WORDS, k=self.FILES))] for repo in self.REPOS}
        self.queries = [" ".join(rng.sample(_WORDS, 2)) for _ in range(self.QUERIES)]
        self.code_queries = [f"def {rng.choice(_WORDS)}_{rng.choice(_WORDS)}" for _ in range(self.CODE_QUERIES)]
        self.issue_zipf, self.user_zipf = Zipf(self.ISSUES, 1.0), Zipf(self.USERS, 0.8)
        self.query_zipf, self.code_zipf = Zipf(self.QUERIES, 1.0), Zipf(self.CODE_QUERIES, 1.0)
        self.info = {issue: self._static(issue) for issue in self.issues}
        self.matches = {q: sorted(rng.sample(self.issues[:200], 6) + rng.sample(self.issues, 4), key=self.rank.get)
                        for q in self.queries}
        self.versions = Versions(seed, self._rate)

    def describe(self) -> dict[str, Any]:
        return {"issues": self.ISSUES, "users": self.USERS, "files_per_repo": self.FILES, "queries": self.QUERIES,
                "issue_change_rate_per_s": "1/900 * rank^-0.5", "file_change_rate_per_s": "1/7200",
                "session_gap_s": self.session_gap_s, "think_median_s": self.think_median_s}

    # -- the world ---------------------------------------------------------------------------------
    def _rate(self, entity: str) -> float:
        if entity.startswith("ISS-"):
            return self.rank[entity] ** -0.5 / 900.0
        return 1.0 / 7200.0 if entity.startswith("file:") else 0.0

    def _static(self, issue: str) -> dict[str, Any]:
        rng = random.Random(f"devtools:issue:{self.seed}:{issue}")
        repo = rng.choice(self.REPOS)
        return {"title": " ".join(rng.sample(_WORDS, 3)), "author": self.users[self.user_zipf.sample(rng) - 1],
                "labels": rng.sample(("bug", "feature", "p1", "p2", "ui", "backend", "docs"), 2),
                "files": [{"repo": repo, "path": p} for p in rng.sample(self.files[repo], rng.randint(1, 3))],
                "closed": rng.random() < 0.25, "comments": rng.randint(0, 6)}

    def _issue(self, issue: str, t: float) -> dict[str, Any]:
        info, v = self.info[issue], self.versions.version(issue, t)
        flips = sum(random.Random(f"flip:{self.seed}:{issue}:{j}").random() < 0.1 for j in range(1, v + 1))
        assignee = self.users[random.Random(f"assignee:{self.seed}:{issue}:{v // 3}").randrange(self.USERS)]
        return {"id": issue, "title": info["title"], "status": "closed" if info["closed"] ^ (flips % 2 == 1) else "open",
                "author": info["author"], "assignee": assignee, "labels": info["labels"],
                "comment_count": info["comments"] + v, "files": info["files"]}

    def _comments(self, issue: str, t: float, limit: int) -> list[dict[str, Any]]:
        count = self.info[issue]["comments"] + self.versions.version(issue, t)
        out = []
        for j in range(count, max(0, count - limit), -1):
            rng = random.Random(f"comment:{self.seed}:{issue}:{j}")
            out.append({"id": f"C{issue[4:]}-{j}", "author": self.users[self.user_zipf.sample(rng) - 1],
                        "body": f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} again"})
        return out

    def execute(self, tool: str, args: dict[str, Any], t: float) -> Any:
        if tool == "search_issues":
            hits = [self._issue(i, t) for i in self.matches[args["query"]]]
            hits = [h for h in hits if args.get("state") == "all" or h["status"] == "open"][:5]
            return {"query": args["query"], "total": len(hits),
                    "items": [{k: h[k] for k in ("id", "title", "status", "author")} for h in hits]}
        if tool == "get_issue":
            return self._issue(args["issue_id"], t)
        if tool == "list_comments":
            comments = self._comments(args["issue_id"], t, int(args.get("limit", 20)))
            return {"issue_id": args["issue_id"], "comments": comments}
        if tool == "get_user":
            k = int(args["user_id"][1:]) - 100
            return {"id": args["user_id"], "name": f"user {k}", "team": _TEAMS[k % len(_TEAMS)],
                    "email": f"u{k}@example.com"}
        if tool == "search_code":
            rng = random.Random(f"code:{self.seed}:{args['repo']}:{args['query']}")
            return {"repo": args["repo"], "matches": [{"path": p, "line": rng.randint(1, 400)}
                                                      for p in rng.sample(self.files[args["repo"]], 5)]}
        if tool == "get_file":
            return self._file_text(args["repo"], args["path"], t)
        if tool in _WRITES:
            self.versions.bump(args["issue_id"], t)
            return {"ok": True, "issue_id": args["issue_id"], "version": self.versions.version(args["issue_id"], t)}
        raise ValueError(f"devtools: unknown tool {tool!r}")

    def _file_text(self, repo: str, path: str, t: float) -> str:
        rev = self.versions.version(f"file:{repo}:{path}", t)
        rng = random.Random(f"file:{self.seed}:{repo}:{path}")
        imports = rng.sample([p for p in self.files[repo] if p != path], 3)
        issues = rng.sample(self.issues[:300], 2)
        lines = [f"# {repo} {path} (revision {rev})", *(f"from {p} import {rng.choice(_WORDS)}" for p in imports),
                 f"# workaround for {issues[0]}, see also {issues[1]}",
                 f"def {rng.choice(_WORDS)}(x):", f"    return x * {rev + 2}"]
        return "\n".join(lines)

    # -- the agent ---------------------------------------------------------------------------------
    def _new_search(self, state: dict[str, Any], weight: float, rng: random.Random) -> list[Step]:
        query = self.queries[self.query_zipf.sample(rng) - 1]
        return [Step("search_issues", {"query": query, "state": st}, {"query": "fresh", "state": "constant"},
                     weight * w) for st, w in (("open", 0.85), ("all", 0.15))]

    def _next_hit(self, state: dict[str, Any], weight: float) -> list[Step]:
        left = [i for i in state.get("hits", []) if i not in state.get("opened", ())]
        return [Step("get_issue", {"issue_id": left[0]}, {"issue_id": "result"}, weight)] if left else []

    def _code(self, state: dict[str, Any], weight: float, rng: random.Random, repo: str | None = None,
              query: str | None = None) -> list[Step]:
        sources = {"repo": "earlier_arg" if repo else "constant", "query": "earlier_arg" if query else "fresh"}
        repo = repo or rng.choices(self.REPOS, (0.6, 0.3, 0.1))[0]
        query = query or self.code_queries[self.code_zipf.sample(rng) - 1]
        return [Step("search_code", {"repo": repo, "query": query}, sources, weight)]

    def steps(self, state: dict[str, Any], rng: random.Random) -> list[Step]:
        last, focus = state.get("last"), state.get("focus")
        if last is None:
            issue = self.issues[self.issue_zipf.sample(rng) - 1]
            return [*self._new_search(state, 0.55, rng), Step("get_issue", {"issue_id": issue}, {"issue_id": "fresh"}, 0.30),
                    *self._code(state, 0.15, rng)]
        data = state["data"]
        if last == "search_issues":
            hits = [(i["id"], w) for i, w in ranked(data["items"], _HIT_RANKS)]
            out = [Step("get_issue", {"issue_id": i}, {"issue_id": "result"}, 0.70 * w) for i, w in hits]
            out += self._new_search(state, 0.12, rng) + self._code(state, 0.05, rng, query=data["query"])
            return [*out, Step(None, weight=0.13)]
        if last == "get_issue":
            x = data["id"]
            seen_users = [u for u in state.get("users", []) if u != data["assignee"]]
            out = [Step("list_comments", {"issue_id": x, "limit": 20}, {"issue_id": "earlier_arg", "limit": "constant"}, 0.40),
                   Step("get_user", {"user_id": data["author"]}, {"user_id": "result"}, 0.15 * 0.7),
                   Step("get_user", {"user_id": data["assignee"]}, {"user_id": "result"}, 0.15 * 0.3),
                   Step("get_file", dict(data["files"][0]), {"repo": "result", "path": "result"}, 0.10),
                   *self._next_hit(state, 0.10),
                   Step("add_comment", {"issue_id": x, "body": f"note {rng.randrange(10**6)}"},
                        {"issue_id": "earlier_arg", "body": "fresh"}, 0.07),
                   Step("update_issue", {"issue_id": x, "status": "closed" if data["status"] == "open" else "open"},
                        {"issue_id": "earlier_arg", "status": "result"}, 0.04)]
            if seen_users:
                out.append(Step("assign_issue", {"issue_id": x, "user_id": seen_users[-1]},
                                {"issue_id": "earlier_arg", "user_id": "result"}, 0.03))
            return [*out, Step(None, weight=0.11)]
        if last == "list_comments":
            authors = [c["author"] for c in data["comments"][:2]]
            out = [Step("get_user", {"user_id": a}, {"user_id": "result"}, 0.35 * w)
                   for a, w in ranked(authors, (0.6, 0.25))] if authors else []
            if authors and focus in self.info:
                out.append(Step("get_user", {"user_id": self.info[focus]["author"]}, {"user_id": "result"}, 0.35 * 0.15))
            out += [Step("add_comment", {"issue_id": data["issue_id"], "body": f"note {rng.randrange(10**6)}"},
                         {"issue_id": "earlier_arg", "body": "fresh"}, 0.18),
                    Step("get_issue", {"issue_id": data["issue_id"]}, {"issue_id": "earlier_arg"}, 0.10),
                    *self._next_hit(state, 0.10), *self._new_search(state, 0.09, rng)]
            return [*out, Step(None, weight=0.18)]
        if last == "get_user":
            out = self._next_hit(state, 0.10) + self._new_search(state, 0.16, rng)
            if focus:
                out += [Step("get_issue", {"issue_id": focus}, {"issue_id": "earlier_arg"}, 0.22),
                        Step("assign_issue", {"issue_id": focus, "user_id": data["id"]},
                             {"issue_id": "earlier_arg", "user_id": "earlier_arg"}, 0.12),
                        Step("list_comments", {"issue_id": focus, "limit": 20},
                             {"issue_id": "earlier_arg", "limit": "constant"}, 0.10)]
            return [*out, Step(None, weight=0.30)]
        if last == "get_file":
            repo, paths, issues = state["file"]
            out = [Step("get_file", {"repo": repo, "path": p}, {"repo": "earlier_arg", "path": "result"}, 0.35 * w)
                   for p, w in ranked(paths, (0.6, 0.3, 0.1))]
            out += [Step("get_issue", {"issue_id": i}, {"issue_id": "result"}, 0.25 * w)
                    for i, w in ranked(issues, (0.7, 0.3))]
            return [*out, *self._code(state, 0.15, rng, repo), Step(None, weight=0.25)]
        if last == "search_code":
            out = [Step("get_file", {"repo": data["repo"], "path": m["path"]}, {"repo": "earlier_arg", "path": "result"},
                        0.70 * w) for m, w in ranked(data["matches"], (0.6, 0.25, 0.15))]
            return [*out, *self._code(state, 0.12, rng, data["repo"]), Step(None, weight=0.18)]
        # after a write
        x = data["issue_id"]
        return [Step("list_comments", {"issue_id": x, "limit": 20}, {"issue_id": "earlier_arg", "limit": "constant"}, 0.30),
                Step("get_issue", {"issue_id": x}, {"issue_id": "earlier_arg"}, 0.30),
                *self._new_search(state, 0.10, rng), Step(None, weight=0.30)]

    def remember(self, state: dict[str, Any], step: Step, data: Any) -> None:
        state["last"], state["data"] = step.tool, data
        tool = step.tool
        if tool == "search_issues":
            state["hits"], state["opened"] = [i["id"] for i in data["items"]], []
        elif tool == "get_issue":
            state["focus"] = data["id"]
            state.setdefault("opened", []).append(data["id"])
            state.setdefault("users", []).append(data["author"])
        elif tool == "list_comments":
            state.setdefault("users", []).extend(c["author"] for c in data["comments"][:2])
        elif tool == "get_file":
            lines = data.splitlines()
            paths = [line.split()[1] for line in lines if line.startswith("from ")]
            issues = [w.rstrip(",") for w in lines[-3].split() if w.startswith("ISS-")]
            state["file"] = (step.args["repo"], paths, issues)
