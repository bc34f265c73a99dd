//! A small ASCII picture of a layout, for `costream demo`.

use costream_core::Layout;

/// Draws `layout` on a character grid `cols` wide (terminal cells are about twice as tall as
/// wide, so the height is scaled by half). Later panes (higher z-order) are drawn on top.
pub fn picture(layout: &Layout, cols: usize) -> String {
    let (w, h) = (
        layout.canvas.width() as usize,
        layout.canvas.height() as usize,
    );
    let rows = (cols * h / w / 2).max(3);
    let mut grid = vec![vec![' '; cols]; rows];
    let mut panes: Vec<_> = layout.panes.iter().collect();
    panes.sort_by_key(|p| p.z_order);
    let scale = |f: costream_core::Frac, n: usize| (usize::from(f.units()) * n + 5_000) / 10_000;
    for p in panes {
        let (x0, y0) = (scale(p.x, cols), scale(p.y, rows));
        let x1 = (scale(p.x, cols) + scale(p.width, cols))
            .min(cols)
            .max(x0 + 2);
        let y1 = (scale(p.y, rows) + scale(p.height, rows))
            .min(rows)
            .max(y0 + 2);
        for (y, row) in grid.iter_mut().enumerate().take(y1).skip(y0) {
            for (x, cell) in row.iter_mut().enumerate().take(x1).skip(x0) {
                let edge_y = y == y0 || y + 1 == y1;
                let edge_x = x == x0 || x + 1 == x1;
                *cell = match (edge_y, edge_x) {
                    (true, true) => '+',
                    (true, false) => '-',
                    (false, true) => '|',
                    (false, false) => ' ',
                };
            }
        }
        let label: Vec<char> = p
            .user
            .as_str()
            .chars()
            .take(x1.saturating_sub(x0 + 2))
            .collect();
        let ly = (y0 + y1) / 2;
        let lx = x0 + 1 + (x1 - x0 - 2).saturating_sub(label.len()) / 2;
        if ly < rows {
            for (i, c) in label.into_iter().enumerate() {
                if lx + i < cols {
                    grid[ly][lx + i] = c;
                }
            }
        }
    }
    grid.into_iter()
        .map(|r| r.into_iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}
