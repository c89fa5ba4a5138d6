//! calicoctl-style tables: a header row and a border of `+`, `-` and `|`.

/// A table to print: column headers, then rows of the same width.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate().take(columns) {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }
        let border: String = widths
            .iter()
            .map(|w| format!("+{}", "-".repeat(w + 2)))
            .collect::<String>()
            + "+\n";
        let line = |cells: &[String], center: bool| -> String {
            let mut text = String::new();
            for (index, width) in widths.iter().enumerate() {
                let cell = cells.get(index).map(String::as_str).unwrap_or("");
                let padding = width - cell.chars().count();
                if center {
                    let left = padding / 2;
                    text += &format!(
                        "| {}{}{} ",
                        " ".repeat(left),
                        cell,
                        " ".repeat(padding - left)
                    );
                } else {
                    text += &format!("| {cell}{} ", " ".repeat(padding));
                }
            }
            text + "|\n"
        };
        let mut out = border.clone();
        out += &line(&self.headers, true);
        out += &border;
        for row in &self.rows {
            out += &line(row, false);
        }
        out += &border;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_calicoctl() {
        let mut table = Table::new(&["GROUPING", "CIDR"]);
        table.row(vec!["IP Pool".into(), "198.18.0.0/15".into()]);
        let text = table.render();
        assert_eq!(
            text,
            "+----------+---------------+\n\
             | GROUPING |     CIDR      |\n\
             +----------+---------------+\n\
             | IP Pool  | 198.18.0.0/15 |\n\
             +----------+---------------+\n"
        );
    }
}
