// The page loads uPlot from /dashboard/uplot.js, which the controller serves from node_modules/uplot
// (src/api/dashboard.ts); its types are the package's.
import uPlot from 'uplot';
export default uPlot;
