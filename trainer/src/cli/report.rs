//! Tables (printed on the terminal and put in the report) and the self-contained
//! `report.html`: every figure embedded as a base64 PNG, no external file, script or font.

use base64::Engine as _;
use std::fmt::Write as _;

/// A table of text cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Title line.
    pub caption: String,
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells (as many as columns).
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table.
    pub fn new(caption: &str, header: &[&str]) -> Self {
        Self {
            caption: caption.to_string(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as aligned plain text (first column left-aligned, the others right-aligned).
    pub fn to_text(&self) -> String {
        let ncol = self.header.len();
        let mut width = vec![0usize; ncol];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |row: &[String]| -> String {
            let cells: Vec<String> = row
                .iter()
                .zip(&width)
                .enumerate()
                .map(|(i, (c, &w))| if i == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") })
                .collect();
            cells.join("  ").trim_end().to_string()
        };
        let mut s = format!("{}\n{}\n", self.caption, line(&self.header));
        let _ = writeln!(
            s,
            "{}",
            "-".repeat(width.iter().sum::<usize>() + 2 * ncol.saturating_sub(1))
        );
        for row in &self.rows {
            let _ = writeln!(s, "{}", line(row));
        }
        s
    }

    /// The table as HTML.
    pub fn to_html(&self) -> String {
        let mut s = format!("<table>\n<caption>{}</caption>\n<tr>", esc(&self.caption));
        for h in &self.header {
            let _ = write!(s, "<th>{}</th>", esc(h));
        }
        s.push_str("</tr>\n");
        for row in &self.rows {
            s.push_str("<tr>");
            for c in row {
                let _ = write!(s, "<td>{}</td>", esc(c));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n");
        s
    }
}

/// A figure: file name under the experiment folder, caption, PNG bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File name (`"convergence_linear.png"`).
    pub file: String,
    /// Caption for the report.
    pub caption: String,
    /// The PNG.
    pub png: Vec<u8>,
}

/// What the report says about one experiment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// The experiment's name.
    pub name: String,
    /// The question it answers.
    pub question: String,
    /// How it is set up (data, split, models, optimiser, losses).
    pub setup: String,
    /// Result tables.
    pub tables: Vec<Table>,
    /// Notes (observations, failures).
    pub notes: Vec<String>,
    /// Figures.
    pub figures: Vec<Figure>,
    /// Seconds it took (None: left out).
    pub seconds: Option<f64>,
    /// Set when the experiment failed as a whole.
    pub error: Option<String>,
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The whole report page.
pub fn html(title: &str, intro: &str, sections: &[Section]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\n\
         body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}\n\
         table{{border-collapse:collapse;margin:1em 0}}caption{{text-align:left;font-weight:bold;padding:.3em 0}}\n\
         td,th{{border:1px solid #bbb;padding:.25em .6em;text-align:right}}td:first-child,th:first-child{{text-align:left}}\n\
         img{{max-width:100%;border:1px solid #ddd}}figure{{margin:1em 0}}.error{{color:#a00}}\n\
         </style></head><body>\n<h1>{}</h1>\n<p>{}</p>\n",
        esc(title),
        esc(title),
        esc(intro)
    );
    s.push_str("<ul>\n");
    for sec in sections {
        let _ = writeln!(s, "<li><a href=\"#{0}\">{0}</a></li>", esc(&sec.name));
    }
    s.push_str("</ul>\n");
    for sec in sections {
        let _ = writeln!(s, "<h2 id=\"{0}\">{0}</h2>", esc(&sec.name));
        if let Some(e) = &sec.error {
            let _ = writeln!(s, "<p class=\"error\">Failed: {}</p>", esc(e));
        }
        if !sec.question.is_empty() {
            let _ = writeln!(s, "<p><b>Question.</b> {}</p>", esc(&sec.question));
        }
        if !sec.setup.is_empty() {
            let _ = writeln!(s, "<p><b>Set-up.</b> {}</p>", esc(&sec.setup));
        }
        if let Some(sec_s) = sec.seconds {
            let _ = writeln!(s, "<p>Time: {sec_s:.1} s.</p>");
        }
        for t in &sec.tables {
            s.push_str(&t.to_html());
        }
        for n in &sec.notes {
            let _ = writeln!(s, "<p>{}</p>", esc(n));
        }
        for f in &sec.figures {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&f.png);
            let _ = writeln!(
                s,
                "<figure><img alt=\"{0}\" src=\"data:image/png;base64,{1}\"><figcaption>{0}</figcaption></figure>",
                esc(&f.caption),
                b64
            );
        }
    }
    s.push_str("</body></html>\n");
    s
}
