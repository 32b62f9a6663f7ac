//! The effective configuration rendered as TOML (`pixdex config show`).

use super::RawConfig;

pub(super) fn toml_string(raw: &RawConfig) -> String {
    // figment ships the `toml` crate's serializer through its value type; serde_json → toml via
    // figment's own Value keeps us from depending on toml directly.
    let v = figment::value::Value::serialize(raw).expect("config serializes");
    let mut out = String::new();
    render_toml(&mut out, "", &v);
    out
}

fn render_toml(out: &mut String, prefix: &str, v: &figment::value::Value) {
    use figment::value::Value;
    let Value::Dict(_, dict) = v else { return };
    // scalars first, then tables, then arrays of tables
    for (k, val) in dict {
        match val {
            Value::Dict(..) => {}
            Value::Array(_, items) if items.iter().all(|i| matches!(i, Value::Dict(..))) && !items.is_empty() => {}
            Value::Empty(..) => {} // unset optional: leave the key out
            _ => out.push_str(&format!("{k} = {}\n", scalar(val))),
        }
    }
    for (k, val) in dict {
        if let Value::Dict(..) = val {
            let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            out.push_str(&format!("\n[{name}]\n"));
            render_toml(out, &name, val);
        }
    }
    for (k, val) in dict {
        if let Value::Array(_, items) = val
            && !items.is_empty()
            && items.iter().all(|i| matches!(i, Value::Dict(..)))
        {
            for item in items {
                out.push_str(&format!("\n[[{k}]]\n"));
                render_toml(out, k, item);
            }
        }
    }
}

fn scalar(v: &figment::value::Value) -> String {
    use figment::value::Value;
    match v {
        Value::String(_, s) => format!("{s:?}"),
        Value::Char(_, c) => format!("\"{c}\""),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => {
            if let Some(i) = n.to_u128() {
                i.to_string()
            } else if let Some(i) = n.to_i128() {
                i.to_string()
            } else {
                n.to_f64().map(|f| f.to_string()).unwrap_or_default()
            }
        }
        Value::Empty(..) => "\"\"".into(),
        Value::Array(_, items) => format!("[{}]", items.iter().map(scalar).collect::<Vec<_>>().join(", ")),
        Value::Dict(_, d) => format!("{{ {} }}", d.iter().map(|(k, v)| format!("{k} = {}", scalar(v))).collect::<Vec<_>>().join(", ")),
    }
}
