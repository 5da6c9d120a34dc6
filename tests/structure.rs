//! The crate's shape, checked on its source: no import cycle between the top-level modules of
//! `src/`, nor between the children of any module, and no source file over 400 lines.
//!
//! The import graph is read from the paths themselves. Every `crate::…`, `super::…` and
//! `self::…` path (also each one in a `use` group) is resolved from the module the file (or an
//! inline `mod`) belongs to; a path from `a::x::…` to `a::y::…` is an edge `x → y` among the
//! children of `a`, and at the root, `x → y` between top-level modules. Comments, string and
//! character literals are skipped, so a path in a doc comment or a message is not an edge.
//! A cycle is reported with the files behind each of its edges.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 400;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/api/v1/orders.rs` is `[api, v1, orders]`, `src/lib.rs` is
/// `[]`, and a `mod.rs` stands for its directory.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).expect("file under src/");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    let crate_root = parts.is_empty() && matches!(stem, "lib" | "main");
    if stem != "mod" && !crate_root {
        parts.push(stem.to_owned());
    }
    parts
}

/// The code of a Rust file with comments and literals blanked out (replaced by spaces, so that
/// tokens on either side stay apart).
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_char(prev(&b, i)) {
            // A raw string: r"…", r#"…"#, with any number of #.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            'raw: while j < b.len() {
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break 'raw;
                }
                j += 1;
            }
            i = j;
            out.push(' ');
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a, 'static).
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push(' ');
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push(' ');
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev(b: &[char], i: usize) -> char {
    if i == 0 { ' ' } else { b[i - 1] }
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A tokenizer just good enough for paths: identifiers, `::`, and single punctuation.
fn tokens(code: &str) -> Vec<String> {
    let b: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if ident_char(c) {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push("::".to_owned());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// The paths a use tree starting at `toks[at]` names, each as its segments after `prefix`:
/// `a::b::{c, d::e}` is `[a, b, c]` and `[a, b, d, e]`. Returns them and where the tree ends.
fn use_tree(toks: &[String], mut at: usize, prefix: &[String]) -> (Vec<Vec<String>>, usize) {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(at).map(String::as_str) {
            Some("{") => {
                let mut paths = Vec::new();
                at += 1;
                while let Some(t) = toks.get(at) {
                    match t.as_str() {
                        "}" => return (paths, at + 1),
                        "," => at += 1,
                        _ => {
                            let (inner, end) = use_tree(toks, at, &path);
                            paths.extend(inner);
                            // Skip what follows the path, e.g. `as name`.
                            at = end;
                            while toks.get(at).is_some_and(|t| t != "," && t != "}") {
                                at += 1;
                            }
                        }
                    }
                }
                return (paths, at);
            }
            Some(t) if t.chars().all(ident_char) && t != "self" => {
                path.push(t.to_owned());
                if toks.get(at + 1).is_some_and(|t| t == "::") {
                    at += 2;
                } else {
                    return (vec![path], at + 1);
                }
            }
            _ => return (vec![path], at + 1),
        }
    }
}

/// Every path a file names, from where it names it: `(module, path)`, both from the crate
/// root. `crate::`, `super::` and `self::` paths are resolved; a path that starts with a name is
/// relative to something this reader does not track and is left out (it can only go down).
fn references(file: &Path) -> Vec<(Vec<String>, Vec<String>)> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let toks = tokens(&code_only(&text));
    let base = module_path(file);
    // Inline `mod name { … }` blocks, as (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut found = Vec::new();
    for i in 0..toks.len() {
        let t = toks[i].as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if toks.get(i + 2).is_some_and(|t| t == "{") => {
                inline.push((toks[i + 1].clone(), depth + 1));
            }
            _ => {}
        }
        let preceded_by_path = i > 0 && toks[i - 1] == "::";
        if preceded_by_path || toks.get(i + 1).is_none_or(|t| t != "::") {
            continue;
        }
        let mut here: Vec<String> = base.clone();
        here.extend(inline.iter().map(|(n, _)| n.clone()));
        let (start, mut j) = match t {
            "crate" => (Vec::new(), i + 2),
            "self" => (here.clone(), i + 2),
            "super" => {
                let mut at = here.clone();
                let mut j = i;
                while toks.get(j).is_some_and(|t| t == "super")
                    && toks.get(j + 1).is_some_and(|t| t == "::")
                {
                    at.pop();
                    j += 2;
                }
                (at, j)
            }
            _ => continue,
        };
        if toks.get(j).is_some_and(|t| t == "self") {
            j += 2;
        }
        for path in use_tree(&toks, j, &start).0 {
            found.push((here.clone(), path));
        }
    }
    found
}

/// Import edges between the children of one module, each with the files that make it.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// For every module (the crate root is `""`), the import graph between its children: a path
/// from `a::x::…` to `a::y::…` is an edge `x → y` among the children of `a`.
fn import_graphs() -> BTreeMap<String, (BTreeSet<String>, Graph)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graphs: BTreeMap<String, (BTreeSet<String>, Graph)> = BTreeMap::new();
    let mut modules = BTreeSet::new();
    for file in &files {
        let path = module_path(file);
        for n in 1..=path.len() {
            modules.insert(path[..n].to_vec());
            let (children, _) = graphs.entry(path[..n - 1].join("::")).or_default();
            children.insert(path[n - 1].clone());
        }
    }
    for file in &files {
        let rel = file
            .strip_prefix(src())
            .expect("under src")
            .display()
            .to_string();
        for (from, to) in references(file) {
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common >= from.len() || common >= to.len() {
                continue; // within one module, or up to an ancestor
            }
            if !modules.contains(&to[..=common]) || !modules.contains(&from[..=common]) {
                continue; // an item, not a module, or an inline (test) module
            }
            let (_, graph) = graphs.entry(from[..common].join("::")).or_default();
            graph
                .entry(from[common].clone())
                .or_default()
                .entry(to[common].clone())
                .or_default()
                .insert(rel.clone());
        }
    }
    graphs
}

/// One cycle through the graph, if there is any, as the modules along it (first repeated last).
fn find_cycle(modules: &BTreeSet<String>, graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        m: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(m.to_owned(), Mark::Open);
        stack.push(m.to_owned());
        for next in graph.get(m).into_iter().flat_map(|e| e.keys()) {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = stack.iter().position(|s| s == next).expect("on the stack");
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(next, graph, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(m.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in modules {
        if marks.get(m).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(c) = visit(m, graph, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_import_cycle_between_the_top_level_modules_nor_between_siblings() {
    let graphs = import_graphs();
    // The reader finds the imports it is meant to find.
    let edges = |parent: &str, from: &str| {
        graphs
            .get(parent)
            .and_then(|(_, g)| g.get(from))
            .map(|e| e.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert!(edges("", "server").contains(&"config".to_owned()));
    assert!(edges("api::v2", "orders").contains(&"wire".to_owned()));
    let mut cycles = Vec::new();
    for (parent, (children, graph)) in &graphs {
        if let Some(cycle) = find_cycle(children, graph) {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} → {} ({:?})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            let within = if parent.is_empty() {
                "the crate root"
            } else {
                parent
            };
            cycles.push(format!("in {within}:\n    {}", steps.join("\n    ")));
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = fs::read_to_string(f)
                .expect("readable source")
                .lines()
                .count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these files (at most {MAX_LINES} lines each): {long:?}"
    );
}

#[test]
fn the_path_reader_sees_groups_and_super_but_not_comments_or_strings() {
    let code = r##"
        // use crate::comment_line;
        /* crate::block /* nested crate::deeper */ still_comment */
        use crate::{alpha::X, beta, gamma::{self, Y}};
        const S: &str = "crate::in_string";
        const R: &str = r#"crate::in_raw "quoted""#;
        const C: char = '"';
        fn f<'a>(x: &'a str) -> &'a str { crate::delta::g(x) }
        mod inner { use super::super::epsilon; }
    "##;
    let toks = tokens(&code_only(code));
    let crate_at: Vec<usize> = toks
        .iter()
        .enumerate()
        .filter(|(_, t)| *t == "crate")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(crate_at.len(), 2, "{toks:?}");
    let paths = |at: usize| use_tree(&toks, at, &[]).0;
    let names = |p: &[&str]| {
        p.iter()
            .map(std::string::ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        paths(crate_at[0] + 2),
        [
            names(&["alpha", "X"]),
            names(&["beta"]),
            names(&["gamma"]),
            names(&["gamma", "Y"])
        ]
    );
    assert_eq!(paths(crate_at[1] + 2), [names(&["delta", "g"])]);
    assert!(toks.iter().any(|t| t == "epsilon"));
    for hidden in ["comment_line", "block", "deeper", "in_string", "in_raw"] {
        assert!(
            !toks.iter().any(|t| t == hidden),
            "{hidden} leaked: {toks:?}"
        );
    }
}

#[test]
fn a_planted_cycle_is_found() {
    let modules: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    let mut graph = Graph::new();
    let edge = |graph: &mut Graph, from: &str, to: &str| {
        graph
            .entry(from.to_owned())
            .or_default()
            .entry(to.to_owned())
            .or_default()
            .insert(format!("{from}.rs"));
    };
    edge(&mut graph, "a", "b");
    edge(&mut graph, "b", "c");
    assert_eq!(find_cycle(&modules, &graph), None);
    edge(&mut graph, "c", "a");
    assert_eq!(
        find_cycle(&modules, &graph),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
}
