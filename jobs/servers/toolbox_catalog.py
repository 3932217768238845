"""The tools of the toolbox fixture: five servers of 22 tools each, named, described and typed like
real MCP servers' tools (an issue tracker, code hosting, a people directory, a shop, a helpdesk).

The agent traces' tools (``jobs/bench/traces/*.jsonl``) are among them under their own names,
with schemas that accept the traces' arguments: ``tracker`` holds the devtools issue tools,
``repos`` its code tools, ``people`` ``get_user``; ``shop`` holds the support traces' customer,
order and shipment tools, ``helpdesk`` the knowledge base, tickets and messages. The other tools
are there to make the catalog as large and as varied as a real five-server gateway's.

Each tool is ``(name, description, arguments, read_only)``; ``arguments`` is a compact spec,
``"name: type[!] description | …"`` (``!`` = required; types ``string``, ``integer``,
``number``, ``boolean``, ``string[]``, ``enum(a,b)``), turned into a JSON Schema by ``schema``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SERVERS", "schema", "tools_of"]

Spec = tuple[str, str, str, bool]

_TRACKER: list[Spec] = [
    ("search_issues", "Search issues by text across titles, bodies and labels. Returns up to 5 matching issues with "
     "id, title, status and assignee; only open issues unless state is 'all'.",
     "query: string! Free-text search terms | state: enum(open,closed,all) Which issues to include (default open)", True),
    ("get_issue", "Get one issue by id: title, status, author, assignee, labels, comment count and the files it "
     "mentions.", "issue_id: string! Issue id, e.g. ISS-1042", True),
    ("list_comments", "List the comments on an issue, newest first, with author and body.",
     "issue_id: string! Issue id | limit: integer How many comments to return (1-100, default 20)", True),
    ("add_comment", "Add a comment to an issue. The comment is posted as the calling user and notifies watchers.",
     "issue_id: string! Issue id | body: string! Comment text (Markdown)", False),
    ("update_issue", "Change an issue's status (open, in_progress, blocked, closed) and record the transition.",
     "issue_id: string! Issue id | status: enum(open,in_progress,blocked,closed)! New status", False),
    ("assign_issue", "Assign an issue to a user, replacing the current assignee.",
     "issue_id: string! Issue id | user_id: string! Id of the new assignee, e.g. U123", False),
    ("create_issue", "Open a new issue with a title, description and optional labels and assignee.",
     "title: string! Short summary | body: string Detailed description (Markdown) | labels: string[] Labels to "
     "apply | assignee: string User id to assign", False),
    ("close_issue", "Close an issue with a resolution (fixed, duplicate, wontfix, invalid).",
     "issue_id: string! Issue id | resolution: enum(fixed,duplicate,wontfix,invalid)! Why it is closed", False),
    ("reopen_issue", "Reopen a closed issue, keeping its history.", "issue_id: string! Issue id", False),
    ("list_labels", "List the labels defined in the tracker with their colours and descriptions.", "", True),
    ("add_label", "Add a label to an issue.", "issue_id: string! Issue id | label: string! Label name", False),
    ("remove_label", "Remove a label from an issue.", "issue_id: string! Issue id | label: string! Label name", False),
    ("list_milestones", "List milestones with due dates and the share of their issues that are closed.",
     "state: enum(open,closed,all) Which milestones (default open)", True),
    ("create_milestone", "Create a milestone with a title and due date.",
     "title: string! Milestone title | due_on: string Due date, YYYY-MM-DD", False),
    ("set_milestone", "Put an issue into a milestone.", "issue_id: string! Issue id | milestone: string! Milestone title",
     False),
    ("link_issues", "Link two issues (blocks, duplicates, relates to).",
     "issue_id: string! Issue id | other_id: string! The linked issue | kind: enum(blocks,duplicates,relates)! "
     "Relation", False),
    ("list_issue_events", "The timeline of an issue: status changes, assignments, label changes and links, oldest "
     "first.", "issue_id: string! Issue id", True),
    ("watch_issue", "Subscribe the calling user to notifications about an issue.", "issue_id: string! Issue id", False),
    ("list_assigned_issues", "List the open issues assigned to a user, most recently updated first.",
     "user_id: string! User id | limit: integer At most this many (default 20)", True),
    ("bulk_update_issues", "Apply one status or label change to many issues at once.",
     "issue_ids: string[]! Issue ids | status: enum(open,in_progress,blocked,closed) New status | label: string "
     "Label to add", False),
    ("export_issues", "Export the issues matching a query as CSV, for reports and spreadsheets.",
     "query: string Filter (same syntax as search) | fields: string[] Columns to include", True),
    ("issue_statistics", "Counts of issues opened and closed per week and the median time to close, for a label or "
     "the whole tracker.", "label: string Restrict to this label | weeks: integer Weeks back (default 12)", True),
]

_REPOS: list[Spec] = [
    ("search_code", "Search source code in a repository by text or symbol name. Returns matching files with line "
     "numbers and a snippet.", "repo: string! Repository name | query: string! Text or symbol to find", True),
    ("get_file", "Read a file from a repository at the default branch (or a given ref) as plain text.",
     "repo: string! Repository name | path: string! Path of the file, e.g. src/app/main.py | ref: string Branch, "
     "tag or commit (default: the default branch)", True),
    ("list_directory", "List the files and folders at a path of a repository.",
     "repo: string! Repository name | path: string Folder path (default: the root) | ref: string Branch, tag or "
     "commit", True),
    ("list_repositories", "List the repositories the user can read, with description, language and last push.",
     "owner: string Restrict to this owner or organisation", True),
    ("get_repository", "Get a repository's metadata: default branch, topics, visibility, open pull requests.",
     "repo: string! Repository name", True),
    ("list_branches", "List the branches of a repository with their last commit.", "repo: string! Repository name",
     True),
    ("create_branch", "Create a branch from another branch or commit.",
     "repo: string! Repository name | branch: string! New branch name | from_ref: string! Branch or commit to "
     "start from", False),
    ("list_commits", "List commits on a branch or touching a path, newest first.",
     "repo: string! Repository name | ref: string Branch (default: the default branch) | path: string Only commits "
     "touching this path | limit: integer At most this many (default 30)", True),
    ("get_commit", "Get a commit: message, author, date and the files it changed with line counts.",
     "repo: string! Repository name | sha: string! Commit hash", True),
    ("compare_refs", "Compare two branches, tags or commits: the commits between them and the combined diff.",
     "repo: string! Repository name | base: string! Base ref | head: string! Head ref", True),
    ("get_blame", "Show, line by line, which commit and author last changed a file.",
     "repo: string! Repository name | path: string! File path", True),
    ("list_pull_requests", "List pull requests of a repository by state, with author, branches and review status.",
     "repo: string! Repository name | state: enum(open,closed,merged,all) Which ones (default open)", True),
    ("get_pull_request", "Get a pull request: description, commits, changed files, checks and reviews.",
     "repo: string! Repository name | number: integer! Pull request number", True),
    ("create_pull_request", "Open a pull request from a branch into another.",
     "repo: string! Repository name | title: string! Title | head: string! Branch with the changes | base: string! "
     "Target branch | body: string Description (Markdown)", False),
    ("merge_pull_request", "Merge a pull request (merge commit, squash or rebase) once its checks pass.",
     "repo: string! Repository name | number: integer! Pull request number | method: enum(merge,squash,rebase) "
     "How to merge (default squash)", False),
    ("review_pull_request", "Submit a review on a pull request: approve, request changes or comment, with line "
     "comments.", "repo: string! Repository name | number: integer! Pull request number | event: "
     "enum(approve,request_changes,comment)! Verdict | body: string Review text", False),
    ("list_tags", "List the tags of a repository, newest first.", "repo: string! Repository name", True),
    ("create_release", "Create a release from a tag with release notes.",
     "repo: string! Repository name | tag: string! Tag name | notes: string Release notes (Markdown)", False),
    ("list_workflow_runs", "List recent CI workflow runs with status, branch and duration.",
     "repo: string! Repository name | branch: string Only runs of this branch | status: "
     "enum(queued,running,success,failure) Only runs in this state", True),
    ("get_workflow_logs", "Download the logs of a CI workflow run, job by job.",
     "repo: string! Repository name | run_id: integer! Workflow run id", True),
    ("rerun_workflow", "Re-run a failed CI workflow run.", "repo: string! Repository name | run_id: integer! Workflow "
     "run id", False),
    ("update_file", "Create or replace a file in a repository with a commit on a branch.",
     "repo: string! Repository name | path: string! File path | content: string! New file content | message: "
     "string! Commit message | branch: string! Branch to commit to", False),
]

_PEOPLE: list[Spec] = [
    ("get_user", "Get a person's profile by user id: name, team, email and role.", "user_id: string! User id, e.g. U123",
     True),
    ("search_users", "Find people by name, email or skill.", "query: string! Name, email or skill | limit: integer "
     "At most this many (default 10)", True),
    ("list_teams", "List the teams of the organisation with their leads and sizes.", "", True),
    ("get_team", "Get a team: its lead, members, channels and the services it owns.", "team: string! Team name", True),
    ("list_team_members", "List the members of a team with their roles.", "team: string! Team name", True),
    ("add_team_member", "Add a person to a team.", "team: string! Team name | user_id: string! User id | role: "
     "enum(member,maintainer,lead) Role (default member)", False),
    ("remove_team_member", "Remove a person from a team.", "team: string! Team name | user_id: string! User id", False),
    ("get_manager", "Get a person's manager and the chain of managers above them.", "user_id: string! User id", True),
    ("get_org_chart", "The reporting tree below a person, a few levels deep.",
     "user_id: string! User id at the top | depth: integer Levels (default 2)", True),
    ("get_availability", "A person's working hours, time zone, out-of-office days and free slots this week.",
     "user_id: string! User id", True),
    ("list_on_call", "Who is on call now, and next, for each service or team rotation.",
     "team: string Only this team's rotations", True),
    ("page_on_call", "Page the on-call engineer of a service with an urgent message.",
     "service: string! Service name | message: string! What is wrong | severity: enum(low,high,critical) "
     "Urgency (default high)", False),
    ("send_direct_message", "Send a chat message to a person.", "user_id: string! Recipient | text: string! "
     "Message text", False),
    ("list_channels", "List the chat channels a person belongs to.", "user_id: string User id (default: the "
     "caller)", True),
    ("post_channel_message", "Post a message to a chat channel.", "channel: string! Channel name | text: string! "
     "Message text", False),
    ("get_user_permissions", "List a person's access groups and the systems they can reach.",
     "user_id: string! User id", True),
    ("grant_access", "Add a person to an access group, with a reason and an optional expiry.",
     "user_id: string! User id | group: string! Access group | reason: string! Why | expires_on: string "
     "YYYY-MM-DD", False),
    ("revoke_access", "Remove a person from an access group.", "user_id: string! User id | group: string! Access "
     "group", False),
    ("list_user_activity", "Recent activity of a person across tools: commits, reviews, issues and messages.",
     "user_id: string! User id | days: integer Days back (default 7)", True),
    ("update_profile", "Update the caller's profile: title, location, pronouns or skills.",
     "title: string Job title | location: string Office or city | skills: string[] Skills", False),
    ("create_group", "Create a mailing or access group with an owner.", "name: string! Group name | owner: "
     "string! Owner's user id | description: string What it is for", False),
    ("deactivate_user", "Deactivate a departing person's account and hand their items to their manager.",
     "user_id: string! User id | effective_on: string YYYY-MM-DD (default today)", False),
]

_SHOP: list[Spec] = [
    ("get_customer", "Get a customer's record: name, email, tier, recent orders and open tickets.",
     "customer_id: string! Customer id, e.g. cus_1a2b3c", True),
    ("search_customers", "Search customers by name, email or phone; returns up to 10 matches with their ids.",
     "query: string! Name, email or phone number", True),
    ("update_address", "Change a customer's shipping address for future orders.",
     "customer_id: string! Customer id | address: string! Full postal address", False),
    ("get_order", "Get an order: status, items, totals, payment and its shipment id.",
     "order_id: string! Order id, e.g. ord_40511", True),
    ("list_orders", "List a customer's orders, newest first, optionally by status.",
     "customer_id: string! Customer id | status: enum(any,pending,paid,packed,shipped,delivered,cancelled) "
     "Only orders in this state (default any)", True),
    ("refund_order", "Refund an order fully or in part to the original payment method.",
     "order_id: string! Order id | reason: string! Why the refund is given | amount: number Amount to refund "
     "(default: the whole order)", False),
    ("get_shipment", "Track a shipment: carrier, tracking number, status and delivery events.",
     "shipment_id: string! Shipment id, e.g. shp_40511", True),
    ("create_order", "Place an order for a customer with items and a shipping address.",
     "customer_id: string! Customer id | items: string[]! SKUs with quantities, e.g. SKU-1001x2 | address: "
     "string Shipping address (default: the customer's)", False),
    ("cancel_order", "Cancel an order that has not shipped yet.", "order_id: string! Order id | reason: string Why",
     False),
    ("update_order_items", "Change the items or quantities of an unshipped order.",
     "order_id: string! Order id | items: string[]! The new SKUs with quantities", False),
    ("list_invoices", "List a customer's invoices with amounts and payment status.", "customer_id: string! "
     "Customer id", True),
    ("get_invoice", "Get an invoice as line items, taxes and totals, with a PDF link.", "invoice_id: string! "
     "Invoice id", True),
    ("issue_credit_note", "Issue a credit note against an invoice.", "invoice_id: string! Invoice id | amount: "
     "number! Amount | reason: string! Why", False),
    ("get_payment", "Get a payment: method, amount, status and any failure reason.", "payment_id: string! Payment id",
     True),
    ("retry_payment", "Retry a failed payment with the customer's saved method.", "payment_id: string! Payment id",
     False),
    ("get_product", "Get a product by SKU: name, price, variants and description.", "sku: string! Product SKU", True),
    ("search_products", "Search the product catalogue by name, category or attribute.",
     "query: string! Search terms | category: string Restrict to a category", True),
    ("check_inventory", "Stock levels of a product per warehouse, with the next restock date.",
     "sku: string! Product SKU", True),
    ("apply_discount", "Apply a discount code or a manual discount to an unpaid order.",
     "order_id: string! Order id | code: string Discount code | percent: number Manual discount (0-100)", False),
    ("create_return", "Open a return for items of a delivered order and email the customer a label.",
     "order_id: string! Order id | items: string[]! SKUs to return | reason: string! Why", False),
    ("get_return", "Get a return's status: label, items received, refund issued.", "return_id: string! Return id",
     True),
    ("sales_report", "Revenue, orders and average order value per day for a date range.",
     "start: string! YYYY-MM-DD | end: string! YYYY-MM-DD", True),
]

_HELPDESK: list[Spec] = [
    ("search_kb", "Search the help-centre knowledge base; returns matching articles with id, title and an excerpt.",
     "query: string! What to look for", True),
    ("get_article", "Read a knowledge-base article in full.", "article_id: string! Article id, e.g. KB-1042", True),
    ("create_ticket", "Open a support ticket for a customer with a subject; the customer is emailed a confirmation.",
     "customer_id: string! Customer id | subject: string! One-line summary | priority: enum(low,normal,high,urgent) "
     "Priority (default normal)", False),
    ("send_message", "Email a customer using one of the saved message templates.",
     "customer_id: string! Customer id | template: string! Template name, e.g. shipping_delay", False),
    ("get_ticket", "Get a ticket: subject, status, priority, assignee and the conversation.", "ticket_id: string! "
     "Ticket id", True),
    ("list_tickets", "List tickets by status, assignee or customer, most recently updated first.",
     "status: enum(new,open,pending,solved,closed) Only this status | assignee: string Agent id | customer_id: "
     "string Customer id", True),
    ("update_ticket_status", "Change a ticket's status (open, pending, solved, closed).",
     "ticket_id: string! Ticket id | status: enum(open,pending,solved,closed)! New status", False),
    ("assign_ticket", "Assign a ticket to an agent or a group.", "ticket_id: string! Ticket id | assignee: string! "
     "Agent id or group name", False),
    ("add_internal_note", "Add a private note to a ticket, visible to agents only.",
     "ticket_id: string! Ticket id | body: string! Note text", False),
    ("reply_to_ticket", "Send a public reply on a ticket to the customer.", "ticket_id: string! Ticket id | body: "
     "string! Reply text", False),
    ("merge_tickets", "Merge duplicate tickets into one, keeping every message.",
     "ticket_id: string! Ticket to keep | duplicate_ids: string[]! Tickets to merge into it", False),
    ("escalate_ticket", "Escalate a ticket to the next support tier with a reason.",
     "ticket_id: string! Ticket id | reason: string! Why it needs escalation", False),
    ("tag_ticket", "Add tags to a ticket for routing and reporting.", "ticket_id: string! Ticket id | tags: "
     "string[]! Tags", False),
    ("list_macros", "List the saved macros (canned actions and replies) agents can apply.", "", True),
    ("apply_macro", "Apply a macro to a ticket: its reply, status and tags in one step.",
     "ticket_id: string! Ticket id | macro: string! Macro name", False),
    ("list_message_templates", "List the email templates available to send_message, with their subjects.", "", True),
    ("create_article", "Write a new knowledge-base article as a draft.", "title: string! Title | body: string! "
     "Content (Markdown) | section: string Help-centre section", False),
    ("update_article", "Edit a knowledge-base article's title or body.", "article_id: string! Article id | title: "
     "string New title | body: string New content (Markdown)", False),
    ("get_sla_status", "Time left before a ticket breaches its first-reply and resolution targets.",
     "ticket_id: string! Ticket id", True),
    ("get_satisfaction_scores", "Customer satisfaction (CSAT) ratings and comments per agent or per week.",
     "agent: string Agent id | weeks: integer Weeks back (default 4)", True),
    ("list_conversations", "List chat conversations waiting for an agent, oldest first.",
     "channel: enum(chat,email,phone,social) Only this channel", True),
    ("close_conversation", "End a chat conversation and send the customer a transcript.",
     "conversation_id: string! Conversation id", False),
]

# (server name = namespace, what it is, its tools), in configuration order.
SERVERS: list[tuple[str, str, list[Spec]]] = [
    ("tracker", "issue tracker", _TRACKER),
    ("repos", "code hosting and CI", _REPOS),
    ("people", "people directory, teams, on-call and chat", _PEOPLE),
    ("shop", "customers, orders, payments, products", _SHOP),
    ("helpdesk", "support tickets, knowledge base, customer messages", _HELPDESK),
]


def schema(arguments: str) -> dict[str, Any]:
    """The JSON Schema of a compact argument spec (see the module's docstring)."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for part in filter(None, (p.strip() for p in arguments.split(" | "))):
        name, _, rest = part.partition(": ")
        kind, _, description = rest.partition(" ")
        if kind.endswith("!"):
            kind = kind[:-1]
            required.append(name)
        if kind.startswith("enum("):
            prop: dict[str, Any] = {"type": "string", "enum": kind[5:-1].split(",")}
        elif kind == "string[]":
            prop = {"type": "array", "items": {"type": "string"}}
        else:
            prop = {"type": kind}
        prop["description"] = description
        properties[name] = prop
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    return result


def tools_of(server: str) -> list[dict[str, Any]]:
    """One server's tools as MCP tool objects (name, description, inputSchema, annotations)."""
    specs = next(tools for name, _what, tools in SERVERS if name == server)
    return [{"name": name, "description": description, "inputSchema": schema(arguments),
             "annotations": {"readOnlyHint": read_only, "destructiveHint": not read_only,
                             "idempotentHint": read_only, "openWorldHint": False}}
            for name, description, arguments, read_only in specs]
