// Hand-written SVG for the benchmark reports (no plotting library): the
// document, text escaping, legend swatches, and a line chart. bench/volumes.ts
// draws its bar panels with these; bench/page-cache.ts its line charts.

export const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A whole SVG document of width × height on a white background. */
export function svgDocument(width: number, height: number, parts: string[]): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">\n` +
    `<rect width="100%" height="100%" fill="white"/>\n${parts.join('\n')}\n</svg>\n`;
}

/** A legend entry: a colour swatch at (x, y) and its label to the right. */
export function legendItem(x: number, y: number, color: string, label: string): string {
  return `<rect x="${x}" y="${y}" width="12" height="12" fill="${color}"/><text x="${x + 16}" y="${y + 10}" font-size="12">${esc(label)}</text>`;
}

export interface LineSeries {
  label: string;
  color: string;
  points: Array<[number, number]>;
  /** Drawn dashed, without markers (a reference line rather than a measurement). */
  dashed?: boolean;
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: LineSeries[];
  /** Ticks on the x axis (the measured x values, say). */
  xTicks: number[];
  width?: number;
  height?: number;
}

/** A round upper bound for an axis (1, 1.2, 1.5, 2, … 8 × a power of ten) at or above max. */
function niceMax(max: number): number {
  if (max <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/** Line charts (linear axes from 0, one polyline per series, legend on the right), stacked in one document. */
export function stackedLineCharts(charts: LineChart[]): string {
  const width = Math.max(...charts.map((c) => c.width ?? 900));
  const parts: string[] = [];
  let y = 0;
  for (const c of charts) {
    parts.push(`<g transform="translate(0 ${y})">`, ...lineChartParts(c), '</g>');
    y += c.height ?? 460;
  }
  return svgDocument(width, y, parts);
}

function lineChartParts(c: LineChart): string[] {
  const W = c.width ?? 900;
  const H = c.height ?? 460;
  const left = 80;
  const right = 330;
  const top = 50;
  const bottom = 60;
  const pw = W - left - right;
  const ph = H - top - bottom;
  const xMax = Math.max(...c.xTicks, ...c.series.flatMap((s) => s.points.map((p) => p[0])));
  const yMax = niceMax(Math.max(...c.series.flatMap((s) => s.points.map((p) => p[1]))));
  const X = (x: number): number => left + (x / xMax) * pw;
  const Y = (y: number): number => top + ph - (y / yMax) * ph;
  const parts: string[] = [];
  parts.push(`<text x="${left + pw / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">${esc(c.title)}</text>`);
  // Grid and y ticks: five steps.
  for (let i = 0; i <= 5; i++) {
    const v = (yMax / 5) * i;
    const y = Y(v).toFixed(1);
    parts.push(`<line x1="${left}" y1="${y}" x2="${left + pw}" y2="${y}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${(Y(v) + 4).toFixed(1)}" text-anchor="end" font-size="11">${v.toLocaleString('en-US')}</text>`);
  }
  for (const t of c.xTicks) {
    const x = X(t).toFixed(1);
    parts.push(`<line x1="${x}" y1="${top + ph}" x2="${x}" y2="${top + ph + 5}" stroke="#333"/>`);
    parts.push(`<text x="${x}" y="${top + ph + 18}" text-anchor="middle" font-size="11">${t}</text>`);
  }
  parts.push(`<line x1="${left}" y1="${top + ph}" x2="${left + pw}" y2="${top + ph}" stroke="#333"/>`);
  parts.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + ph}" stroke="#333"/>`);
  parts.push(`<text x="${left + pw / 2}" y="${H - 18}" text-anchor="middle" font-size="12">${esc(c.xLabel)}</text>`);
  parts.push(`<text transform="translate(18 ${top + ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(c.yLabel)}</text>`);
  for (const [i, s] of c.series.entries()) {
    const pts = s.points.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
    parts.push(`<polyline points="${pts}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    if (!s.dashed) for (const [x, y] of s.points) parts.push(`<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="3.5" fill="${s.color}"/>`);
    parts.push(legendItem(left + pw + 24, top + 10 + i * 20, s.color, s.label));
  }
  return parts;
}
