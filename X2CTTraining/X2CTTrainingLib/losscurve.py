"""The loss curve of a training run as MRML nodes: a table (step + one column per loss) and a plot chart.

Slicer's plot view redraws a chart whenever its table changes, so appending a
row per progress event is all it takes to animate the curve. Only the MRML
scene is needed, so this runs, and is tested, headless.
"""

from __future__ import annotations

import math

import vtk


class LossCurve:
    """A vtkMRMLTableNode and a vtkMRMLPlotChartNode with one vtkMRMLPlotSeriesNode per loss."""

    def __init__(self, scene, name: str = "X2CT training losses"):
        self.scene = scene
        self.tableNode = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
        self.chartNode = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        self.chartNode.SetTitle(name)
        self.chartNode.SetXAxisTitle("step")
        self.chartNode.SetYAxisTitle("loss")
        self.seriesNodes: dict[str, object] = {}
        self._column("step")

    @property
    def table(self):
        return self.tableNode.GetTable()

    def names(self) -> list[str]:
        """The loss names, in the order they first appeared."""
        return list(self.seriesNodes)

    def add(self, step: int, losses: dict[str, float]) -> None:
        """Append one row; a loss seen for the first time gets a column (NaN before) and a series."""
        for name in losses:
            if name not in self.seriesNodes:
                self._addSeries(name)
        table = self.table
        for index in range(table.GetNumberOfColumns()):
            column = table.GetColumn(index)
            name = column.GetName()
            value = step if name == "step" else losses.get(name, math.nan)
            column.InsertNextValue(float(value))
        table.Modified()
        self.tableNode.Modified()

    def rows(self) -> list[dict[str, float]]:
        """The table as a list of {column: value} (for tests and scripts)."""
        table = self.table
        columns = [table.GetColumn(i) for i in range(table.GetNumberOfColumns())]
        return [{c.GetName(): c.GetValue(row) for c in columns} for row in range(table.GetNumberOfRows())]

    def _column(self, name: str):
        column = vtk.vtkDoubleArray()
        column.SetName(name)
        column.SetNumberOfTuples(self.table.GetNumberOfRows())
        column.Fill(math.nan)
        self.table.AddColumn(column)
        return column

    def _addSeries(self, name: str) -> None:
        self._column(name)
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
        series.SetAndObserveTableNodeID(self.tableNode.GetID())
        series.SetXColumnName("step")
        series.SetYColumnName(name)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(series.MarkerStyleNone)
        series.SetUniqueColor()
        self.chartNode.AddAndObservePlotSeriesNodeID(series.GetID())
        self.seriesNodes[name] = series
