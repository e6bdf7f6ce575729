// Cosmos DB (NoSQL API) for agent state: the layout cadre/stores/cosmos.py expects — one
// container, partition key path /pk (an agent record is a point read), TTL switched on with
// no default expiry (defaultTtl -1): items carry their own ttl (CADRE_COSMOS_TTL_SECONDS),
// dead letters keep ttl -1. Keys are off (disableLocalAuth): the app uses its identity.

@description('Name of the Cosmos DB account.')
param name string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Serverless (pay per request, no idle cost) or Provisioned (autoscale throughput).')
@allowed([
  'Serverless'
  'Provisioned'
])
param capacityMode string = 'Serverless'

@description('Autoscale maximum RU/s of the container when capacityMode is Provisioned.')
@minValue(1000)
param autoscaleMaxThroughput int = 1000

@description('Database name (CADRE_COSMOS_DATABASE).')
param databaseName string

@description('Container name (CADRE_COSMOS_CONTAINER).')
param containerName string

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: (capacityMode == 'Serverless') ? [{ name: 'EnableServerless' }] : []
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource container 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: containerName
  properties: {
    resource: {
      id: containerName
      partitionKey: {
        paths: [
          '/pk'
        ]
        kind: 'Hash'
        version: 2
      }
      defaultTtl: -1
    }
    options: (capacityMode == 'Serverless') ? {} : {
      autoscaleSettings: {
        maxThroughput: autoscaleMaxThroughput
      }
    }
  }
}

output name string = account.name
output id string = account.id
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
output containerName string = container.name
