//! `orders-api config print`: every effective value as TOML, annotated with its source.

use figment::value::{Dict, Value};

use super::Sources;
use super::values::display_value;

/// Renders the merged configuration as TOML, one `# source` comment per key, secrets as `***`.
pub fn render(sources: &Sources) -> String {
    let mut out = format!(
        "# profile: {}\n# layers (lowest first): {}\n",
        sources.profile,
        sources.layers.join(", ")
    );
    let Ok(root) = sources.figment.extract::<Dict>() else {
        return out;
    };
    let (tables, scalars): (Vec<_>, Vec<_>) =
        root.iter().partition(|(_, v)| matches!(v, Value::Dict(..)));
    for (key, value) in scalars {
        line(&mut out, sources, key, key, value);
    }
    for (name, table) in tables {
        render_table(&mut out, sources, name, table);
    }
    out
}

/// Every effective leaf key with its displayed value (secrets as `***`), in key order: what
/// a reload compares.
pub fn flatten(sources: &Sources) -> std::collections::BTreeMap<String, String> {
    fn walk(out: &mut std::collections::BTreeMap<String, String>, path: &str, value: &Value) {
        match value {
            Value::Dict(_, dict) => {
                for (key, inner) in dict {
                    let path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(out, &path, inner);
                }
            }
            leaf => {
                out.insert(path.to_string(), display_value(path, leaf));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    if let Ok(root) = sources.figment.extract::<Value>() {
        walk(&mut out, "", &root);
    }
    out
}

fn render_table(out: &mut String, sources: &Sources, path: &str, table: &Value) {
    let Value::Dict(_, dict) = table else { return };
    out.push_str(&format!("\n[{path}]\n"));
    let (tables, scalars): (Vec<_>, Vec<_>) =
        dict.iter().partition(|(_, v)| matches!(v, Value::Dict(..)));
    for (key, value) in scalars {
        line(out, sources, key, &format!("{path}.{key}"), value);
    }
    for (key, inner) in tables {
        render_table(out, sources, &format!("{path}.{key}"), inner);
    }
}

fn line(out: &mut String, sources: &Sources, name: &str, path: &str, value: &Value) {
    out.push_str(&format!(
        "{name} = {}  # {}\n",
        display_value(path, value),
        sources.source_of(path)
    ));
}
