//! Output helpers: aligned tables for people, JSON for scripts.

use clap::ValueEnum;

/// `--format` of list commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Prints rows as a table with a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(header, rows));
}

/// Renders a table (see [`table`]).
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<width$}   ", c, width = w[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Prints a value as pretty JSON.
pub fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// "3 minutes ago"-style age of a unix timestamp.
pub fn age(unix: i64) -> String {
    let secs = (chrono::Utc::now().timestamp() - unix).max(0);
    match secs {
        0..=59 => format!("{secs} seconds ago"),
        60..=3599 => format!("{} minutes ago", secs / 60),
        3600..=86399 => format!("{} hours ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

/// Human-readable size (powers of 1000, as docker prints).
pub fn size(bytes: u64) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < U.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Runs `f` for each name in turn (as `nook rm a b c` does): prints the name when it worked
/// and the error when it did not, goes on either way, and fails if any did.
pub async fn each<F, Fut>(names: Vec<String>, mut f: F) -> std::process::ExitCode
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut failed = false;
    for name in names {
        match f(name.clone()).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("nook: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// The flags every list command shares (`ps`, `images`, `content ls`, `snapshots ls`, ...).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ListFlags {
    /// Print only the names (or ids).
    #[arg(short, long, conflicts_with = "format")]
    pub quiet: bool,
    /// Output: table (default), json, or a Go-template as docker takes it, e.g.
    /// '{{.Names}}' or 'table {{.ID}}\t{{.Status}}' ({{json .}} prints a row as JSON).
    #[arg(long, value_parser = ListFormat::parse)]
    pub format: Option<ListFormat>,
    /// Do not truncate ids (and commands).
    #[arg(long)]
    pub no_trunc: bool,
}

/// `--format` of a list command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFormat {
    /// Aligned columns with a header.
    Table,
    /// A pretty-printed JSON array.
    Json,
    /// A template printed once per row; `table` adds a header and aligns `\t`-separated cells.
    Template { table: bool, parts: Vec<Part> },
}

/// A piece of a parsed `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// `{{.Name}}`
    Field(String),
    /// `{{json .}}` (None) or `{{json .Name}}`.
    Json(Option<String>),
}

impl ListFormat {
    /// Parses `table`, `json`, or a template (`{{.ID}}`, `table {{.ID}}\t{{.Names}}`).
    pub fn parse(s: &str) -> Result<ListFormat, String> {
        match s.trim() {
            "" | "table" => return Ok(ListFormat::Table),
            "json" => return Ok(ListFormat::Json),
            _ => {}
        }
        // as docker: a literal \t or \n typed in the shell means a tab or a newline
        let s = s.replace("\\t", "\t").replace("\\n", "\n");
        let (table, body) = match s.strip_prefix("table") {
            Some(rest) if rest.starts_with(char::is_whitespace) => (true, rest.trim_start()),
            _ => (false, s.as_str()),
        };
        let mut parts = Vec::new();
        let mut rest = body;
        while let Some(i) = rest.find("{{") {
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let j = after
                .find("}}")
                .ok_or_else(|| format!("{{{{ without }}}} in template {s:?}"))?;
            let action = after[..j]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-');
            let action = action.trim();
            let field = |f: &str| -> Result<Option<String>, String> {
                match f.trim() {
                    "." => Ok(None),
                    f if f.starts_with('.') && f.len() > 1 && !f[1..].contains(' ') => {
                        Ok(Some(f[1..].to_string()))
                    }
                    f => Err(format!(
                        "template action {f:?} is not supported: use {{{{.Field}}}}, {{{{json .}}}} or {{{{json .Field}}}}"
                    )),
                }
            };
            if let Some(arg) = action.strip_prefix("json ") {
                parts.push(Part::Json(field(arg)?));
            } else {
                match field(action)? {
                    Some(f) => parts.push(Part::Field(f)),
                    None => parts.push(Part::Json(None)),
                }
            }
            rest = &after[j + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(ListFormat::Template { table, parts })
    }
}

/// One row of a list: what `-q`, the table, JSON and templates print of it.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// What `-q` prints.
    pub key: String,
    /// The table's cells, in the header's order.
    pub cells: Vec<String>,
    /// The JSON object of this row (`--format json`, `{{json .}}`, and template fields by key).
    pub json: serde_json::Value,
    /// Template fields under docker's names (`ID`, `Names`, ...), looked up before the columns
    /// and the JSON keys.
    pub fields: Vec<(&'static str, String)>,
}

/// Folds a name for lookups: `CONTAINER ID`, `container_id` and `ContainerID` are one name.
fn fold(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A JSON value as a template prints it: strings bare, maps as `k=v,k=v`.
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(m) => {
            let mut kv: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect();
            kv.sort();
            kv.join(",")
        }
        serde_json::Value::Array(a) => a.iter().map(plain).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

impl Row {
    /// The value of template field `name` (`None`: no such field).
    fn field(&self, header: &[&str], name: &str) -> Option<(String, serde_json::Value)> {
        let want = fold(name);
        if let Some((_, v)) = self.fields.iter().find(|(k, _)| fold(k) == want) {
            return Some((v.clone(), serde_json::Value::String(v.clone())));
        }
        if let Some(i) = header.iter().position(|h| fold(h) == want) {
            let v = self.cells.get(i).cloned().unwrap_or_default();
            return Some((v.clone(), serde_json::Value::String(v)));
        }
        if let serde_json::Value::Object(m) = &self.json {
            if let Some((_, v)) = m.iter().find(|(k, _)| fold(k) == want) {
                return Some((plain(v), v.clone()));
            }
        }
        None
    }

    /// The names a template can use on this row.
    fn field_names(&self, header: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = self.fields.iter().map(|(k, _)| k.to_string()).collect();
        for h in header {
            if !v.iter().any(|x| fold(x) == fold(h)) {
                v.push(h.split_whitespace().map(title).collect());
            }
        }
        if let serde_json::Value::Object(m) = &self.json {
            for k in m.keys() {
                if !v.iter().any(|x| fold(x) == fold(k)) {
                    v.push(k.split('_').map(title).collect());
                }
            }
        }
        v
    }
}

fn title(w: &str) -> String {
    let lower = w.to_ascii_lowercase();
    let mut c = lower.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// A template's column title for field `name`: a title the command gives (`ID` → `CONTAINER
/// ID`), the table's own header when the field is a column, else the name in capitals
/// (`CreatedAt` → `CREATED AT`), as docker prints.
fn column_title(header: &[&str], titles: &[(&str, &str)], name: &str) -> String {
    if let Some((_, t)) = titles.iter().find(|(n, _)| fold(n) == fold(name)) {
        return t.to_string();
    }
    if let Some(h) = header.iter().find(|h| fold(h) == fold(name)) {
        return h.to_string();
    }
    let mut out = String::new();
    let mut prev_upper = true;
    for ch in name.chars() {
        let upper = ch.is_ascii_uppercase();
        if upper && !prev_upper {
            out.push(' ');
        }
        prev_upper = upper;
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// Renders the rows as `--format` asks (not `-q`).
pub fn render_list(
    format: &ListFormat,
    header: &[&str],
    titles: &[(&str, &str)],
    rows: &[Row],
) -> anyhow::Result<String> {
    match format {
        ListFormat::Table => Ok(render_table(
            header,
            &rows.iter().map(|r| r.cells.clone()).collect::<Vec<_>>(),
        )),
        ListFormat::Json => Ok(serde_json::to_string_pretty(
            &rows.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
        )? + "\n"),
        ListFormat::Template { table, parts } => {
            let mut lines = Vec::new();
            for r in rows {
                let mut s = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => s.push_str(t),
                        Part::Field(f) => match r.field(header, f) {
                            Some((v, _)) => s.push_str(&v),
                            None => anyhow::bail!(
                                "template: no field .{f} here; the fields are {}",
                                r.field_names(header).join(", ")
                            ),
                        },
                        Part::Json(None) => s.push_str(&serde_json::to_string(&r.json)?),
                        Part::Json(Some(f)) => match r.field(header, f) {
                            Some((_, v)) => s.push_str(&serde_json::to_string(&v)?),
                            None => anyhow::bail!(
                                "template: no field .{f} here; the fields are {}",
                                r.field_names(header).join(", ")
                            ),
                        },
                    }
                }
                lines.push(s);
            }
            if !table {
                return Ok(lines.into_iter().map(|l| l + "\n").collect());
            }
            // the header: the template with each field replaced by its column title
            let mut head = String::new();
            for p in parts {
                match p {
                    Part::Text(t) => head.push_str(t),
                    Part::Field(f) | Part::Json(Some(f)) => {
                        head.push_str(&column_title(header, titles, f))
                    }
                    Part::Json(None) => {}
                }
            }
            let split = |l: &str| -> Vec<String> { l.split('\t').map(str::to_string).collect() };
            let hcells = split(&head);
            let hrefs: Vec<&str> = hcells.iter().map(String::as_str).collect();
            let cells: Vec<Vec<String>> = lines.iter().map(|l| split(l)).collect();
            Ok(render_table(&hrefs, &cells))
        }
    }
}

impl ListFlags {
    /// Prints `rows` as these flags ask: keys with `-q`, else the table, JSON or template.
    pub fn print(&self, header: &[&str], rows: &[Row]) -> anyhow::Result<()> {
        self.print_titled(header, &[], rows)
    }

    /// [`ListFlags::print`], with the column titles of template fields that are not the
    /// table's own headers (docker's `{{.ID}}` of `ps` is titled `CONTAINER ID`).
    pub fn print_titled(
        &self,
        header: &[&str],
        titles: &[(&str, &str)],
        rows: &[Row],
    ) -> anyhow::Result<()> {
        use std::io::Write;
        let text = if self.quiet {
            rows.iter().map(|r| format!("{}\n", r.key)).collect()
        } else {
            render_list(
                self.format.as_ref().unwrap_or(&ListFormat::Table),
                header,
                titles,
                rows,
            )?
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    }

    /// `id` shortened to 12 characters unless `--no-trunc`.
    pub fn id(&self, id: &str) -> String {
        if self.no_trunc {
            id.to_string()
        } else {
            id.chars().take(12).collect()
        }
    }
}

/// Parses labels given as `KEY=VALUE` (or `KEY`, an empty value), the one rule of every
/// command that takes labels (`-l`, `--label`, `content label`, `ns label`, ...).
pub fn parse_labels(v: &[String]) -> anyhow::Result<std::collections::HashMap<String, String>> {
    v.iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            if k.is_empty() || k.chars().any(char::is_whitespace) {
                anyhow::bail!(
                    "invalid label {kv:?}: expected KEY=VALUE (or KEY for an empty value)"
                );
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Labels as one cell: `a=1,b=2`, sorted.
pub fn labels_text(m: &std::collections::HashMap<String, String>) -> String {
    let mut l: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    l.sort();
    l.join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns() {
        let t = super::render_table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A     BB\nxxx   y\n");
    }
    #[test]
    fn templates() {
        use super::*;
        let rows = vec![Row {
            key: "abc".into(),
            cells: vec!["abc".into(), "Up 2 seconds".into()],
            json: serde_json::json!({"id": "abcdef", "labels": {"a": "1"}}),
            fields: vec![("Names", "web".into())],
        }];
        let h = ["CONTAINER ID", "STATUS"];
        let f = ListFormat::parse("{{.Names}}").unwrap();
        assert_eq!(render_list(&f, &h, &[], &rows).unwrap(), "web\n");
        let f = ListFormat::parse("table {{.ContainerID}}\\t{{.Status}}\\t{{.Labels}}").unwrap();
        assert_eq!(
            render_list(&f, &h, &[], &rows).unwrap(),
            "CONTAINER ID   STATUS         LABELS\nabc            Up 2 seconds   a=1\n"
        );
        let f = ListFormat::parse("{{json .Labels}} {{ .Id }}").unwrap();
        assert_eq!(
            render_list(&f, &h, &[], &rows).unwrap(),
            "{\"a\":\"1\"} abcdef\n"
        );
        let f = ListFormat::parse("{{.Nope}}").unwrap();
        let e = render_list(&f, &h, &[], &rows).unwrap_err().to_string();
        assert!(e.contains("no field .Nope") && e.contains("Names"), "{e}");
        assert!(ListFormat::parse("{{if .X}}").is_err());
        assert_eq!(ListFormat::parse("json").unwrap(), ListFormat::Json);
    }
    #[test]
    fn labels() {
        let l = super::parse_labels(&["a=1".into(), "b".into(), "c=x=y".into()]).unwrap();
        assert_eq!(l["a"], "1");
        assert_eq!(l["b"], "");
        assert_eq!(l["c"], "x=y");
        assert!(super::parse_labels(&["=x".into()]).is_err());
    }
    #[test]
    fn sizes() {
        assert_eq!(super::size(999), "999 B");
        assert_eq!(super::size(1_500_000), "1.5 MB");
    }
}
