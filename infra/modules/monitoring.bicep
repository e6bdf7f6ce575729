// Log Analytics + workspace-based Application Insights + the Cadre workbook.
// Local (instrumentation-key) ingestion is off: the app and the Functions host send
// telemetry with Entra ID (APPLICATIONINSIGHTS_AUTHENTICATION_STRING and the Monitoring
// Metrics Publisher role, see rbac.bicep).

@description('Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Days Log Analytics keeps data (30 is included in the price).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    retentionInDays: retentionInDays
    sku: {
      name: 'PerGB2018'
    }
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

// The dashboard of the observability work: every query in it is checked against the
// metric and attribute names the code emits (tests/observability/test_workbook.py).
resource workbook 'Microsoft.Insights/workbooks@2022-04-01' = {
  name: guid(applicationInsights.id, 'cadre-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    category: 'workbook'
    displayName: 'Cadre agents (${applicationInsightsName})'
    serializedData: loadTextContent('../workbook.json')
    sourceId: applicationInsights.id
    version: '1.0'
  }
}

output applicationInsightsName string = applicationInsights.name
output applicationInsightsId string = applicationInsights.id
output connectionString string = applicationInsights.properties.ConnectionString
output logAnalyticsId string = logAnalytics.id
output workbookId string = workbook.id
