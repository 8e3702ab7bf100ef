#!/usr/bin/env python3
"""A scripted browser for the test IdP (tests/idp/idp.mjs).

Completes oidc-provider's built-in development pages (devInteractions) as a
person would: types the login name and a password into the sign-in form,
confirms the consent page, and for the device flow enters and confirms the
user code. Python 3 standard library only.

    browser.py URL
        Opens an authorization URL and follows it through login and consent.
        When the IdP redirects to http://localhost:<port>... or
        http://127.0.0.1:<port>... (a CLI's loopback listener), it sends that
        request and exits 0 once it is sent (see below).
        Usable as BROWSER for Python's webbrowser module:
        BROWSER='python3 /path/browser.py %s'.

    browser.py --device VERIFICATION_URI --user-code CODE
    browser.py --device VERIFICATION_URI_COMPLETE
        Opens the device verification page, submits the user code, signs in
        and confirms; exits 0 when the page says the sign-in succeeded.

Environment:
    IDP_LOGIN  the login name (an account of the IdP's accounts file)
    IDP_CA     PEM file of the CA to trust for the IdP's HTTPS
    IDP_BROWSER_LOG  optional file for the callback child's reports

The loopback request is made by a forked child that waits for the
listener's answer, while this process exits as soon as the request is
sent. A caller such as OSMO's CLI runs the browser through webbrowser.open,
which waits for the browser to exit, and only then serves its callback
listener: waiting here for the answer would deadlock. The child lets go of
stdin, stdout and stderr (a caller may read them to their end before it
answers); it reports a failed delivery or an error status from the
listener in the file IDP_BROWSER_LOG names, if set.

On any unexpected page: prints the URL, status and the first 2000 bytes of
the body on stderr and exits 1.
"""

import argparse
import html.parser
import http.client
import http.cookiejar
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 30
MAX_STEPS = 40
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


class Failure(Exception):
    """An unexpected page: reported with its URL, status and body."""

    def __init__(self, reason, url="", status=0, body=b""):
        super().__init__(reason)
        self.reason = reason
        self.url = url
        self.status = status
        self.body = body


class Form:
    def __init__(self, attrs):
        self.id = attrs.get("id") or ""
        self.action = attrs.get("action") or ""
        self.method = (attrs.get("method") or "get").lower()
        self.inputs = []  # (name, type, value)

    def field(self, name):
        for input_name, _, value in self.inputs:
            if input_name == name:
                return value
        return None

    def has(self, name):
        return any(input_name == name for input_name, _, _ in self.inputs)


class PageParser(html.parser.HTMLParser):
    """Collects the forms (with their inputs) and the title of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self.title = ""
        self._form = None
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = {name: (value if value is not None else "") for name, value in attrs}
        if tag == "form":
            self._form = Form(attrs)
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            name = attrs.get("name")
            if name:
                kind = (attrs.get("type") or "text").lower()
                self._form.inputs.append((name, kind, attrs.get("value", "")))
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


class KeepEveryStatus(urllib.request.HTTPErrorProcessor):
    """Hands every response back as is: no automatic redirects, no raising."""

    def http_response(self, request, response):
        return response

    https_response = http_response


def is_loopback(url):
    parsed = urllib.parse.urlsplit(url)
    return parsed.scheme == "http" and parsed.hostname in LOOPBACK_HOSTS


class Browser:
    def __init__(self, login, ca_file):
        context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies),
            urllib.request.HTTPSHandler(context=context),
            KeepEveryStatus(),
        )
        self.login = login
        self.logins = 0
        self.codes_entered = 0

    def fetch(self, url, fields=None):
        data = None
        if fields is not None:
            data = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(url, data=data, headers={"User-Agent": "gantry-test-browser"})
        try:
            with self.opener.open(request, timeout=TIMEOUT) as response:
                return response.status, response.headers, response.read()
        except (urllib.error.URLError, OSError) as error:
            raise Failure(f"request failed: {error}", url) from error

    def run(self, url, user_code=None, device=False):
        """Follows pages from `url`; returns when done (raises Failure)."""
        fields = None
        for _ in range(MAX_STEPS):
            if is_loopback(url):
                deliver_callback(url, fields)
                return
            status, headers, body = self.fetch(url, fields)
            fields = None
            if status in (301, 302, 303, 307, 308):
                location = headers.get("Location")
                if not location:
                    raise Failure("redirect without a Location", url, status, body)
                url = urllib.parse.urljoin(url, location)
                continue
            if status != 200:
                raise Failure("unexpected status", url, status, body)

            page = PageParser()
            page.feed(body.decode("utf-8", "replace"))
            title = page.title.strip()

            if "Sign-in Success" in title:
                if device:
                    return
                raise Failure("device success page in an authorization flow", url, status, body)

            url, fields = self.next_step(url, page, user_code, status, body)
        raise Failure(f"no end after {MAX_STEPS} pages", url)

    def next_step(self, url, page, user_code, status, body):
        """The request that answers this page: (url, form fields)."""
        for form in page.forms:
            action = urllib.parse.urljoin(url, form.action or url)
            hidden = [(name, value) for name, kind, value in form.inputs if kind == "hidden"]
            if form.has("login") and form.has("password"):
                # devInteractions' sign-in: any password; an unknown login
                # comes back to this page.
                self.logins += 1
                if self.logins > 1:
                    raise Failure(f"login {self.login!r} refused (sign-in page again)", url, status, body)
                return action, hidden + [("login", self.login), ("password", "any-password")]
            if form.field("prompt") == "consent":
                return action, hidden
            if form.id == "op.deviceInputForm" or (form.has("user_code") and not form.field("user_code")):
                if not user_code:
                    raise Failure("the page asks for a user code and none was given", url, status, body)
                self.codes_entered += 1
                if self.codes_entered > 1:
                    raise Failure("user code refused (input page again)", url, status, body)
                return action, hidden + [("user_code", user_code)]
            if form.id == "op.deviceConfirmForm":
                # Only the form's own fields (confirm=yes): the Abort button
                # lives outside the form.
                return action, hidden
            if page.title.strip() == "Submitting Callback" and form.method == "post":
                # A form_post page that a browser submits with JavaScript.
                return action, hidden
        raise Failure("unexpected page", url, status, body)


def detach_stdio():
    """Lets go of the caller's stdin, stdout and stderr (which may be pipes
    that the caller reads to their end before it answers the callback);
    reports go to the file IDP_BROWSER_LOG names, if any."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    log = os.environ.get("IDP_BROWSER_LOG")
    if log:
        os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), 2)
    else:
        os.dup2(devnull, 2)


def deliver_callback(url, fields):
    """Sends the request to the loopback listener from a forked child and
    returns once it is sent (the child waits for the answer)."""
    parsed = urllib.parse.urlsplit(url)
    target = urllib.parse.urlunsplit(("", "", parsed.path or "/", parsed.query, ""))
    method = "GET" if fields is None else "POST"
    body = None if fields is None else urllib.parse.urlencode(fields)
    headers = {"User-Agent": "gantry-test-browser"}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"

    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        detach_stdio()
        code = 0
        try:
            connection = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=120)
            connection.request(method, target, body=body, headers=headers)
            os.write(write_end, b"sent")
            os.close(write_end)
            write_end = None
            response = connection.getresponse()
            answer = response.read(2000)
            if response.status >= 300:
                print(
                    f"browser.py: the loopback listener answered {response.status} to {url}: "
                    f"{answer.decode('utf-8', 'replace')}",
                    file=sys.stderr,
                )
                code = 1
        except Exception as error:  # pylint: disable=broad-except
            message = f"could not deliver {url}: {error}"
            if write_end is not None:
                os.write(write_end, message.encode())
            else:
                print(f"browser.py: {message}", file=sys.stderr)
            code = 1
        sys.stderr.flush()
        os._exit(code)

    os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    report = b"".join(chunks)
    if report != b"sent":
        raise Failure(report.decode("utf-8", "replace") or "the callback child died", url)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("url", nargs="?", help="authorization URL to open")
    parser.add_argument("--device", metavar="VERIFICATION_URI", help="device verification page")
    parser.add_argument("--user-code", help="user code to enter on the device page")
    args = parser.parse_args(argv)

    login = os.environ.get("IDP_LOGIN")
    if not login:
        print("browser.py: IDP_LOGIN is not set", file=sys.stderr)
        return 2
    browser = Browser(login, os.environ.get("IDP_CA") or None)
    try:
        if args.device:
            if args.url:
                parser.error("give either URL or --device, not both")
            browser.run(args.device, user_code=args.user_code, device=True)
        elif args.url:
            browser.run(args.url)
        else:
            parser.error("an authorization URL or --device is required")
    except Failure as failure:
        print(f"browser.py: {failure.reason}", file=sys.stderr)
        print(f"  url: {failure.url}", file=sys.stderr)
        print(f"  status: {failure.status}", file=sys.stderr)
        print(f"  body: {failure.body[:2000].decode('utf-8', 'replace')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
