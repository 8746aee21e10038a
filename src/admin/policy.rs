//! The status page's supply-chain policy section: the latest refused
//! downloads and the releases index documents hold back now, from the
//! policy's record. Formats only.

use super::text::escape;
use crate::config::supply::format_instant;
use crate::supply::{HeldRow, Refused};
use std::fmt::Write;

/// What the section shows, read by the caller at one moment.
pub struct PolicyView {
    /// The latest refusals, newest first.
    pub refusals: Vec<Refused>,
    /// Held back now.
    pub held: Vec<HeldRow>,
    /// The policy's now.
    pub now: i64,
}

/// Rows shown per table.
const ROWS: usize = 50;

/// Writes the section.
pub fn section(out: &mut String, v: &PolicyView) -> std::fmt::Result {
    write!(
        out,
        "<h2>Supply-chain policy</h2><p class=\"note\">policy time {} · \
         <span id=\"policy-held\" data-value=\"{held}\">{held}</span> releases held back · \
         <span id=\"policy-refusals\" data-value=\"{refused}\">{refused}</span> recent refusals</p>",
        format_instant(v.now),
        held = v.held.len(),
        refused = v.refusals.len(),
    )?;
    out.push_str("<h3>Held back</h3>");
    if v.held.is_empty() {
        out.push_str("<p class=\"empty\">nothing is held back</p>");
    } else {
        out.push_str(
            "<table id=\"policy-held-table\"><thead><tr><th>mount</th><th>project</th>\
             <th>version</th><th>rule</th><th>until</th></tr></thead><tbody>",
        );
        for row in v.held.iter().take(ROWS) {
            write!(
                out,
                "<tr><td>{}</td><td class=\"key\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&row.mount),
                escape(&row.project),
                escape(&row.version),
                row.hold.rule.as_str(),
                row.hold
                    .until
                    .map(format_instant)
                    .unwrap_or_else(|| "—".into()),
            )?;
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("<h3>Latest refusals</h3>");
    if v.refusals.is_empty() {
        out.push_str("<p class=\"empty\">no download refused</p>");
        return Ok(());
    }
    out.push_str(
        "<table id=\"policy-refusals-table\"><thead><tr><th>when</th><th>client</th><th>mount</th>\
         <th>project</th><th>version</th><th>rule</th><th>why</th></tr></thead><tbody>",
    );
    for r in v.refusals.iter().take(ROWS) {
        write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"key\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            format_instant(r.at),
            escape(&r.client),
            escape(&r.mount),
            escape(&r.project),
            escape(&r.version),
            r.hold.rule.as_str(),
            escape(&r.hold.describe()),
        )?;
    }
    out.push_str("</tbody></table>");
    Ok(())
}
