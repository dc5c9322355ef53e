// Render the maths with the KaTeX shipped in docs/assets/katex (no CDN: the site works offline).
// Markdown pages: pymdownx.arithmatex (generic mode) wraps formulas in .arithmatex as \(...\) and \[...\].
// Notebook pages (mkdocs-jupyter): markdown cells keep $...$ and $$...$$.
// A formula KaTeX cannot parse is reported on the console (tests/test_docs.py fails on console errors).
document$.subscribe(({ body }) => {
  const tex = [
    { left: "\\(", right: "\\)", display: false },
    { left: "\\[", right: "\\]", display: true },
  ];
  const dollars = [{ left: "$$", right: "$$", display: true }, { left: "$", right: "$", display: false }];
  body.querySelectorAll(".arithmatex").forEach((el) => renderMathInElement(el, { delimiters: tex }));
  body.querySelectorAll(".jupyter-wrapper .jp-RenderedMarkdown, .jupyter-wrapper .jp-RenderedLatex").forEach(
    (el) => renderMathInElement(el, { delimiters: [...dollars, ...tex] }));
});
