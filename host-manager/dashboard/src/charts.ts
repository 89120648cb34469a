/** Small time-series charts (uPlot, served by the controller), sized to their box and redrawn as samples arrive. */
import uPlot from './uplot.js';

const COLORS = ['#0b62d6', '#c2410c', '#15803d', '#7c3aed', '#be185d', '#0e7490'];

export interface Chart {
  set(x: number[], series: { label: string; values: (number | null)[] }[]): void;
  destroy(): void;
}

/** A chart in `box` (its title above); `unit` is appended to the axis values. */
export function lineChart(box: HTMLElement, title: string, unit: string): Chart {
  box.innerHTML = `<h3>${title}</h3><div class="plot"></div>`;
  const target = box.querySelector<HTMLElement>('.plot')!;
  let plot: uPlot | undefined;
  let labels = '';
  const width = (): number => Math.max(200, target.clientWidth || box.clientWidth - 16);

  function build(series: { label: string }[]): void {
    plot?.destroy();
    target.innerHTML = '';
    plot = new uPlot(
      {
        width: width(),
        height: 150,
        legend: { show: series.length > 1 },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true } },
        axes: [{ space: 60 }, { size: 52, values: (_u, ticks) => ticks.map((t) => `${+t.toFixed(2)}${unit}`) }],
        series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length]!, width: 1.6, spanGaps: true, points: { show: false } }))],
      },
      [[]],
      target,
    );
  }

  const resize = new ResizeObserver(() => plot?.setSize({ width: width(), height: 150 }));
  resize.observe(box);
  return {
    set(x, series) {
      if (x.length === 0 || series.length === 0) {
        plot?.destroy();
        plot = undefined;
        labels = '';
        target.innerHTML = '<div class="empty">no samples yet</div>';
        return;
      }
      const names = series.map((s) => s.label).join('\n');
      if (!plot || names !== labels) {
        build(series);
        labels = names;
      }
      plot!.setData([x.map((t) => t / 1000), ...series.map((s) => s.values)] as uPlot.AlignedData);
    },
    destroy() {
      resize.disconnect();
      plot?.destroy();
    },
  };
}
