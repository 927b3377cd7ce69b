"""The page checks of the browser test (``pagecheck``) on small HTML snippets: each kind of problem
is reported, with the offending snippet, and a clean page passes. No browser, no built book."""

from __future__ import annotations

import pagecheck
import pytest
from pagecheck import Image, check_page

REPO = "/home/someone/attnprune"

# The site of the examples: page path → its anchor ids.
SITE = {
    "book/intro.html": {"main", "notation"},
    "book/executed/01_problem.html": {"the-attention-matrix", "def-attention", "equation-loss"},
    "book/bibliography.html": {"id1"},
    "_sources/book/executed/01_problem.ipynb": set(),
    "genindex.html": set(),
}


def ids_for(path):
    return SITE.get(path)


def page(body: str, head: str = "") -> str:
    return f"<html><head><title>t</title>{head}</head><body>{body}</body></html>"


CLEAN = page(
    """
    <nav><a href="../intro.html">Intro</a> <a href="#">menu</a> <a href="https://arxiv.org/abs/2410.11261">paper</a>
      <a href="../../genindex.html">Index</a> <a href="../../_sources/book/executed/01_problem.ipynb">.ipynb</a></nav>
    <dialog id="search"><p>$$ hidden search dialog \\frac $$</p></dialog>
    <section id="the-attention-matrix">
    <h1>The attention matrix<a class="headerlink" href="#the-attention-matrix">#</a></h1>
    <p>Let <span class="math notranslate nohighlight"><mjx-container class="MathJax" jax="SVG">
      <svg><g data-mml-node="math"><g data-mml-node="mi"></g></svg>
      <mjx-assistive-mml><math><mi>A</mi><mo>=</mo><mi>λ</mi></math></mjx-assistive-mml>
      </mjx-container></span> be the matrix of <a class="reference internal" href="#def-attention">Definition 1.1</a>,
      as in (<a href="#equation-loss">1</a>) and <a href="../intro.html#notation">the notation</a>
      (<a class="reference internal" href="../bibliography.html#id1">Liang <em>et al.</em>, 2025</a>). It costs $5.</p>
    <p>Results land in
      <code class="docutils literal notranslate"><span class="pre">_build/results/quick/</span></code>.</p>
    <div class="cell docutils container"><div class="cell_input docutils container"><div class="highlight-ipython3">
      <div class="highlight"><pre>results_dir = "_build/results/quick"
cost = "$x$ and $$ and \\frac{a}{b}"</pre></div></div></div>
      <div class="cell_output docutils container"><div class="output stream highlight-myst-ansi"><div class="highlight">
      <pre>relative error 0.0123; mean $ 3 and $ 4</pre></div></div>
      <figure class="align-default" id="fig-loss"><img src="../../_images/loss.png" alt="loss">
        <figcaption><p>The loss along the descent.</p></figcaption></figure></div></div>
    </section>
    """
)


def problems_of(html: str, images=(), where="book/executed/01_problem.html") -> list[str]:
    return [str(problem) for problem in check_page(html, where, ids_for, images, repo_root=REPO)]


def test_a_clean_page_passes():
    images = [Image("http://127.0.0.1:8000/_images/loss.png", True, 640)]
    assert problems_of(CLEAN, images) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<p>the matrix $$ W = W_Q W_K^\\top $$ is fused</p>", "'$$'"),
        ("<p>the matrix \\(W\\) is fused</p>", "'\\\\('"),
        ("<p>where \\[ A = D^{-1} \\] holds</p>", "'\\\\['"),
        ("<p>\\begin{aligned} a &amp;= b \\end{aligned}</p>", "'\\\\begin{'"),
        ("<p>with step $\\eta = 1/L$ and more</p>", "inline math"),
        ("<p>the error \\mathbf{E} is small</p>", "'\\\\mathbf'"),
        ("<p>with weight decay \\lambda</p>", "'\\\\lambda'"),
    ],
)
def test_raw_tex_is_reported_with_its_context(body, expected):
    found = problems_of(page(body))
    assert found, body
    assert all(problem.startswith("[math]") for problem in found)
    assert any(expected in problem for problem in found), found


def test_raw_tex_in_code_and_in_code_output_is_not_math():
    body = "<pre>print('$$ \\\\frac{1}{2} $$')</pre><p><code>$\\lambda$</code></p>"
    assert problems_of(page(body)) == []


def test_raw_tex_in_a_rendered_markdown_output_is_reported():
    body = '<div class="cell_output"><div class="output text_markdown"><p>ratio $\\rho$</p></div></div>'
    assert any("raw TeX" in problem for problem in problems_of(page(body)))


def test_mathjax_errors_are_reported():
    svg_error = (
        '<mjx-container><svg><g data-mml-node="merror" data-mjx-error="Undefined control sequence \\bfW">'
        "<text>\\bfW</text></g></svg></mjx-container>"
    )
    chtml_error = "<mjx-container><mjx-merror><mjx-mtext>Missing close brace</mjx-mtext></mjx-merror></mjx-container>"
    found = problems_of(page(f"<p>{svg_error} and {chtml_error}</p><p>Math input error</p>"))
    assert "[math] MathJax error: Undefined control sequence \\bfW" in found
    assert any("Missing close brace" in problem for problem in found)
    assert any("Math input error" in problem for problem in found)


def test_an_undefined_macro_drawn_in_red_is_reported():
    svg = '<svg><g data-mml-node="mtext" fill="red"><use data-c="5C"></use><use data-c="62"></use></g></svg>'
    mml = '<mjx-assistive-mml><math><mtext mathcolor="red">\\b</mtext></math></mjx-assistive-mml>'
    assert problems_of(page(f"<p>x <mjx-container>{svg}{mml}</mjx-container></p>")) == [
        "[math] undefined TeX macro: \\b"
    ]


def test_an_undefined_equation_reference_is_reported():
    math = "<mjx-assistive-mml><math><mtext>(???)</mtext></math></mjx-assistive-mml>"
    body = f"<p>by <mjx-container>{math}</mjx-container></p>"
    assert any("???" in problem for problem in problems_of(page(body)))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '<p>see <a href="#no-such-section">above</a></p>',
            "anchor #no-such-section not on book/executed/01_problem.html",
        ),
        ('<p><a href="../intro.html#nope">x</a></p>', "anchor #nope not on book/intro.html"),
        ('<p><a href="02_gradient.html">next</a></p>', "missing file: href='02_gradient.html'"),
        ('<p><a href="http://127.0.0.1/?q=1">x</a></p>', None),  # another site: not checked
    ],
)
def test_broken_internal_links_are_reported(body, expected):
    found = pagecheck.check_links(page(body), "book/executed/01_problem.html", ids_for)
    if expected is None:
        assert found == []
    else:
        assert [problem.check for problem in found] == ["link"]
        assert expected in found[0].snippet, found


def test_a_redirect_to_a_missing_page_is_reported():
    good = page("", head='<meta http-equiv="Refresh" content="0; url=book/intro.html" />')
    bad = page("", head='<meta http-equiv="Refresh" content="0; url=book/nowhere.html" />')
    assert pagecheck.check_links(good, "index.html", ids_for) == []
    assert "book/nowhere.html" in pagecheck.check_links(bad, "index.html", ids_for)[0].snippet


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('<p>as shown by <span class="problematic" id="id2">{cite}`nobody2024`</span></p>', "problematic"),
        ("<p>as shown by {cite}`nobody2024`.</p>", "{cite}"),
        ("<p>see {eq}`loss` and {ref}`sec-x`</p>", "{eq}"),
        ("<p>see Section ?? for details</p>", "'??'"),
        ('<div class="system-message"><p>Unknown target name: "foo".</p></div>', "system message"),
    ],
)
def test_unresolved_citations_and_references_are_reported(body, expected):
    found = problems_of(page(body))
    assert any(problem.startswith("[xref]") and expected in problem for problem in found), found


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<p>saved to /work/main/_build/results/quick/x.json</p>", "/work/"),
        ("<div class=\"cell_output\"><pre>PosixPath('/tmp/tmpab12/model')</pre></div>", "PosixPath("),
        ("<pre>loaded from /home/someone/attnprune/.venv/lib/python3.11/site-packages/x</pre>", "site-packages"),
        ("<pre>loaded from /home/someone/attnprune/data</pre>", REPO),
        ("<p>the results are in _build/results/quick</p>", "_build/"),
        ('<div class="cell_output"><pre>wrote _build/results/quick/a.json</pre></div>', "_build/"),
        ("<p>cache in /root/.cache/attnprune</p>", "/root/"),
    ],
)
def test_build_paths_are_reported_with_their_context(body, expected):
    found = problems_of(page(body))
    assert any(problem.startswith("[build-path]") and repr(expected) in problem for problem in found), found


def test_a_build_path_is_quoted_with_its_page_context():
    (problem,) = pagecheck.check_build_paths(pagecheck.visible_text(page("<p>data: /tmp/x.json here</p>")))
    assert problem.snippet == "'/tmp/' in “data: /tmp/x.json here”"


@pytest.mark.parametrize(
    "body",
    [
        '<div class="cell_output"><pre>Traceback (most recent call last):\n  File "x.py"</pre></div>',
        '<div class="cell_output"><div class="output traceback highlight-ipythontb"><pre>boom</pre></div></div>',
        '<div class="cell_output"><pre>ValueError: sparsity must be in [0, 1)</pre></div>',
    ],
)
def test_tracebacks_and_error_outputs_are_reported(body):
    assert any(problem.startswith("[traceback]") for problem in problems_of(page(body)))


def test_an_error_admonition_in_prose_is_not_a_traceback():
    body = '<div class="admonition error"><p>Error: do not do this.</p></div>'
    assert problems_of(page(body)) == []


def test_images_that_did_not_load_and_figures_without_captions_are_reported():
    images = [Image("http://h/_images/a.png", True, 0), Image("http://h/_images/b.png", False, 0)]
    found = problems_of(page('<figure id="fig-x"><img src="../../_images/a.png"></figure>'), images)
    assert "[image] loaded empty or broken (naturalWidth 0): http://h/_images/a.png" in found
    assert "[image] not finished loading: http://h/_images/b.png" in found
    assert "[figure] figure fig-x has no caption: ../../_images/a.png" in found


def test_hidden_elements_and_typeset_math_are_not_visible_text():
    html = page(
        '<p>shown</p><div hidden>/tmp/a</div><div style="display: none">/root/b</div><script>var a="$$"</script>'
        "<mjx-container><mjx-assistive-mml><math><mi>\\lambda</mi></math></mjx-assistive-mml></mjx-container>"
    )
    assert pagecheck.visible_text(html).everything == "shown"


def test_javascript_errors_are_reported_but_the_toolchains_known_harmless_one():
    errors = ["Identifier 'THEBE_JS_URL' has already been declared", "ReferenceError: katex is not defined"]
    assert [str(problem) for problem in pagecheck.check_javascript(errors)] == [
        "[javascript] ReferenceError: katex is not defined"
    ]
