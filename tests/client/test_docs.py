"""docs/CLI.md stays true: its ```python setup runs, every `$ cbloss ...`
example in its ```console blocks runs (in order, against one fresh server with
the sample datasets) and prints what the page shows, and every flag of every
command's --help is described in that command's section.

Output comparison: lines holding a JSON document are compared as JSON
(numbers to a relative 1e-6; timestamps and bench timings are not compared);
other lines must match exactly. A command without `$?` in it must exit 0.

    /usr/bin/python3 -m unittest -v test_docs      (from tests/client/)
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import cli_support as cs

# Values that change from run to run.
VOLATILE_KEYS = {"create_time", "update_time", "requests", "seconds", "rps",
                 "p50_us", "p90_us", "p99_us"}


def read_doc():
    with open(os.path.join(cs.DOCS, "CLI.md")) as f:
        return f.read()


def blocks(markdown, language):
    return re.findall(r"```%s\n(.*?)```" % language, markdown, flags=re.S)


def examples(markdown):
    """[(command, expected output lines)] from the ```console blocks."""
    out = []
    for block in blocks(markdown, "console"):
        for line in block.splitlines():
            if line.startswith("$ "):
                out.append((line[2:], []))
            elif out:
                out[-1][1].append(line)
    return out


def json_matches(expected, actual, path="$"):
    """None if `actual` matches `expected`, else a description."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(expected) != set(actual):
            return "%s: keys %s != %s" % (path, sorted(expected),
                                          sorted(actual) if isinstance(actual, dict) else actual)
        for k in expected:
            if k in VOLATILE_KEYS:
                continue
            d = json_matches(expected[k], actual[k], "%s.%s" % (path, k))
            if d:
                return d
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(expected) != len(actual):
            return "%s: %r != %r" % (path, expected, actual)
        for i, (e, a) in enumerate(zip(expected, actual)):
            d = json_matches(e, a, "%s[%d]" % (path, i))
            if d:
                return d
        return None
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if not isinstance(actual, (int, float)) or abs(actual - expected) > 1e-6 * abs(expected) + 1e-12:
            return "%s: %r != %r" % (path, expected, actual)
        return None
    return None if expected == actual else "%s: %r != %r" % (path, expected, actual)


def line_matches(expected, actual):
    if expected.startswith("{"):
        try:
            return json_matches(json.loads(expected), json.loads(actual))
        except ValueError as e:
            return "not JSON: %s (%s)" % (actual, e)
    return None if expected.rstrip() == actual.rstrip() else "%r != %r" % (expected, actual)


def command_sections(markdown):
    """{"datasets put": section text, ...} from the '### `cbloss ...`' headings,
    and "" for the text before the first one (global options)."""
    sections = {}
    parts = re.split(r"^### `cbloss ([a-z -]+)`\s*$", markdown, flags=re.M)
    sections[""] = parts[0]
    for name, text in zip(parts[1::2], parts[2::2]):
        sections[name.strip()] = text
    return sections


def help_flags(command):
    r = cs.run_cli(command + ["--help"], timeout=10)
    assert r.returncode == 0, r.stderr
    options = r.stdout.split("Options:", 1)[1].split("Subcommands:", 1)[0]
    return sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", options)) - {"--help"})


class CliDocTest(unittest.TestCase):

    def test_examples_print_what_the_page_shows(self):
        doc = read_doc()
        work = tempfile.mkdtemp(prefix="cbloss-doc-")
        server = cs.Server().start()
        try:
            for code in blocks(doc, "python"):
                subprocess.run(["/usr/bin/python3", "-c", code], cwd=work, check=True,
                               timeout=60)
            env = dict(os.environ, CBLOSS_TARGET=server.target,
                       PATH=os.path.dirname(cs.CLI) + os.pathsep + os.environ["PATH"])
            cases = examples(doc)
            self.assertGreater(len(cases), 20)
            for command, expected in cases:
                with self.subTest(command=command):
                    self.assertTrue(command.startswith("cbloss "), command)
                    r = subprocess.run(["bash", "-c", command], cwd=work, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, timeout=60)
                    if "$?" not in command:
                        self.assertEqual(r.returncode, 0, r.stdout)
                    actual = r.stdout.splitlines()
                    self.assertEqual(len(actual), len(expected),
                                     "\n".join(["expected:"] + expected + ["got:"] + actual))
                    for e, a in zip(expected, actual):
                        diff = line_matches(e, a)
                        self.assertIsNone(diff, "%s\ngot:\n%s" % (diff, r.stdout))
        finally:
            server.close()
            shutil.rmtree(work, ignore_errors=True)

    def test_every_flag_is_documented_in_its_section(self):
        sections = command_sections(read_doc())
        for command in ([], ["health"], ["datasets", "put"], ["datasets", "get"],
                        ["datasets", "list"], ["datasets", "delete"],
                        ["datasets", "add-counts"], ["runs", "create"], ["runs", "get"],
                        ["runs", "list"], ["runs", "delete"], ["weights"], ["loss"],
                        ["bench"]):
            name = " ".join(command)
            with self.subTest(command=name):
                self.assertIn(name, sections, "no '### `cbloss %s`' section" % name)
                for flag in help_flags(command):
                    self.assertTrue("`%s" % flag in sections[name],
                                    "%s is not described in the %r section" % (flag, name))


if __name__ == "__main__":
    unittest.main()
